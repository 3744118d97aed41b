//! A streaming pipeline across three actors: producer → transformer → root.
//!
//! ```text
//! cargo run --release --example pipeline -- [ITEMS]
//! ```
//!
//! The producer streams numbers; the transformer (which reaches the
//! producer by address) squares them and streams the results on; the root
//! consumes ITEMS results and then simply *closes* its stream. Closing
//! travels upstream: the transformer's next send fails with `Closed`, it
//! closes its own input, the producer's next send fails the same way, and
//! every stage returns what it did. Nothing is cancelled or killed; the
//! nursery then ends both actors.

use furrow::{Addr, Context, Error, Outcome};
use std::time::Instant;

/// Stage 1: numbers from `start` on, until the consumer closes the stream.
#[furrow::context]
async fn numbers(ctx: Context, start: u64) -> furrow::Result<u64> {
    ctx.started(&()).await?;
    let mut sent = 0;
    ctx.open_stream(async |out| {
        let mut i = start;
        loop {
            match out.send(&i).await {
                Ok(()) => {
                    sent += 1;
                    i += 1;
                }
                Err(Error::Closed(_)) => return Ok(()), // downstream is done
                Err(e) => return Err(e),
            }
        }
    })
    .await?;
    Ok(sent)
}

/// Stage 2: square what `upstream` produces and pass it on as (x, x²).
/// Returns (what the producer sent, what this stage forwarded).
#[furrow::context]
async fn squares(ctx: Context, upstream: Addr) -> furrow::Result<(u64, u64)> {
    ctx.started(&()).await?;
    furrow::connect(&upstream, async |producer| {
        producer
            .open_context(numbers, (1,), async |up, (): ()| {
                let forwarded = up
                    .open_stream(async |input| {
                        ctx.open_stream(async |output| {
                            let mut n = 0;
                            while let Some(x) = input.recv::<u64>().await? {
                                match output.send(&(x, x * x)).await {
                                    Ok(()) => n += 1,
                                    Err(Error::Closed(_)) => break, // the root closed: stop pulling
                                    Err(e) => return Err(e),
                                }
                            }
                            Ok(n)
                        })
                        .await
                    })
                    .await?; // leaving the input stream closes it upstream
                let produced = match up.wait_for_result::<u64>().await? {
                    Outcome::Returned(n) => n,
                    Outcome::Cancelled { .. } => 0,
                };
                Ok((produced, forwarded))
            })
            .await
    })
    .await
}

#[furrow::main]
async fn main() -> anyhow::Result<()> {
    let items: u64 = std::env::args().nth(1).map(|s| s.parse()).transpose()?.unwrap_or(200_000);
    let start = Instant::now();
    furrow::open_nursery(async |n| {
        let producer = n.start_actor("producer").await?;
        let transformer = n.start_actor("transformer").await?;
        println!("producer    {}  at {}", producer.aid(), producer.addrs()[0]);
        println!("transformer {}", transformer.aid());
        let upstream = producer.addrs()[0].clone();
        let t = Instant::now();
        let (received, sum) = transformer
            .open_context(squares, (upstream,), async |ctx, (): ()| {
                let got = ctx
                    .open_stream(async |s| {
                        let (mut got, mut sum) = (0u64, 0u128);
                        while let Some((x, sq)) = s.recv::<(u64, u64)>().await? {
                            anyhow::ensure!(sq == x * x, "bad square {x}² = {sq}");
                            got += 1;
                            sum += sq as u128;
                            if got % (items / 4).max(1) == 0 {
                                println!("  root: {got:>8} results so far (last {x}² = {sq})");
                            }
                            if got == items {
                                break; // leaving the scope closes our end
                            }
                        }
                        Ok((got, sum))
                    })
                    .await?;
                match ctx.wait_for_result::<(u64, u64)>().await? {
                    Outcome::Returned((produced, forwarded)) => {
                        println!("  producer:    sent {produced} numbers, then saw the stream closed");
                        println!("  transformer: forwarded {forwarded} squares, then saw the stream closed");
                    }
                    Outcome::Cancelled { canceller } => println!("  cancelled by {canceller}"),
                }
                anyhow::Ok(got)
            })
            .await?;
        let secs = t.elapsed().as_secs_f64();
        println!("  root:        received {received} results (sum of squares {sum})");
        println!(
            "{received} items through 3 actors in {secs:.3} s ({:.0} items/s); closed from the root",
            received as f64 / secs
        );
        anyhow::Ok(())
    })
    .await?;
    println!("all actors ended and reaped; total {:.3} s", start.elapsed().as_secs_f64());
    Ok(())
}

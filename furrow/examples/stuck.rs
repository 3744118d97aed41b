//! A tree that deadlocks on purpose, and the dumps that say why.
//!
//! ```text
//! cargo run --example stuck             # stuck for 2 s, then its dumps, then it gives up
//! cargo run --example stuck -- --wait   # stays stuck: try `kill -USR1 <pid>` or `furrow dump`
//! ```
//!
//! The root opens a context on `counter` and waits for its first value
//! before it sends the `go` the counter waits for: each side waits for the
//! other's stream. Beside it, `lookup` is called on `db`, whose function
//! waits on a lock the example never releases. After two seconds the root
//! prints the dump of every actor of the tree (its own first) and gives
//! up; the nursery then ends both children. docs/guide.md, "When a tree
//! hangs", reads this output line by line.

use furrow::Context;
use std::time::Duration;

/// Sends the numbers from 1 once its opener said `go`.
#[furrow::context]
async fn counter(ctx: Context) -> furrow::Result<()> {
    ctx.started(&()).await?;
    ctx.open_stream(async |s| {
        // Waits for `go` before sending anything.
        let Some(go) = s.recv::<String>().await? else { return Ok(()) };
        println!("counter: got {go:?}");
        for n in 1u64.. {
            s.send(&n).await?;
        }
        Ok(())
    })
    .await
}

/// A lookup behind a lock that is never released.
#[furrow::remote]
async fn lookup(key: String) -> String {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _held = LOCK.lock().await;
    std::mem::forget(_held);
    let _never = LOCK.lock().await;
    format!("value of {key}")
}

#[furrow::main]
async fn main() -> anyhow::Result<()> {
    let wait = std::env::args().any(|a| a == "--wait");
    furrow::open_nursery(async |n| {
        let c = n.start_actor("counter").await?;
        let db = n.start_actor("db").await?;
        let stuck = async {
            let stream = c.open_context(counter, (), async |ctx, ()| {
                ctx.open_stream(async |s| {
                    // The mistake: wait for the first number before `go`.
                    let first = s.recv::<u64>().await?;
                    s.send(&"go").await?;
                    furrow::Ok(first)
                })
                .await
            });
            let call = db.run(lookup, ("answer".to_owned(),));
            tokio::join!(stream, call)
        };
        if wait {
            println!(
                "stuck (pid {}); ask with: kill -USR1 {}  or  furrow dump",
                std::process::id(),
                std::process::id()
            );
            let _ = stuck.await;
            return Ok(());
        }
        // Pinned and polled by reference: the stuck dialogs stay open
        // while the dumps are taken (dropping them would cancel them).
        tokio::pin!(stuck);
        tokio::select! {
            r = &mut stuck => anyhow::bail!("the deadlock resolved itself: {r:?}"),
            () = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
        println!("stuck for 2 s; the dumps of the tree:\n");
        print!("{}", furrow::local_dump()?);
        for p in [&c, &db] {
            print!("\n{}", p.dump().await?);
        }
        anyhow::bail!("gave up after 2 s: see the dumps above")
    })
    .await
}

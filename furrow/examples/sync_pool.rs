//! A plain sync program that spreads a CPU-heavy loop over worker
//! processes with a pool, and shows a progress bar while it runs.
//!
//! ```text
//! cargo run --release --example sync_pool              # the pool, one worker per CPU
//! cargo run --release --example sync_pool -- 2         # 2 workers
//! cargo run --release --example sync_pool -- serial    # the same loop, serially
//! ```
//!
//! The work: an ASCII picture of the Mandelbrot set, each character the
//! average escape time of a 24 × 12 block of sub-pixels (up to 3000
//! iterations each): one row of characters is one task. The serial version
//! of the loop is `(0..ROWS).map(render_row)`; the pool version is the
//! same `map`, in other processes, results still in row order.
//!
//! No `async` in sight: `main` is an ordinary function, and the only async
//! code is the remote function itself, which runs in the workers.

use furrow::pool::PoolOptions;
use std::io::Write as _;
use std::time::Instant;

const COLS: u32 = 96;
const ROWS: u32 = 40;
const SUB_X: u32 = 24;
const SUB_Y: u32 = 12;
const MAX_ITER: u32 = 3000;

/// One row of the picture.
fn render(row: u32) -> String {
    const SHADES: &[u8] = b" .:-=+*#%@";
    (0..COLS)
        .map(|col| {
            let mut sum = 0u64;
            for sy in 0..SUB_Y {
                for sx in 0..SUB_X {
                    let x = -2.2 + 3.0 * (col * SUB_X + sx) as f64 / (COLS * SUB_X) as f64;
                    let y = -1.2 + 2.4 * (row * SUB_Y + sy) as f64 / (ROWS * SUB_Y) as f64;
                    sum += escape_time(x, y) as u64;
                }
            }
            let mean = sum as f64 / (SUB_X * SUB_Y) as f64 / MAX_ITER as f64;
            SHADES[((mean.sqrt() * (SHADES.len() - 1) as f64).round() as usize).min(SHADES.len() - 1)] as char
        })
        .collect()
}

fn escape_time(cx: f64, cy: f64) -> u32 {
    let (mut x, mut y) = (0.0f64, 0.0f64);
    for i in 0..MAX_ITER {
        if x * x + y * y > 4.0 {
            return i;
        }
        (x, y) = (x * x - y * y + cx, 2.0 * x * y + cy);
    }
    MAX_ITER
}

/// The task, as the workers run it.
#[furrow::remote]
async fn render_row(row: u32) -> String {
    render(row)
}

/// Redraw a one-line progress bar on stderr.
fn draw_bar(done: u64, total: u64) {
    let width = 40;
    let filled = (done * width / total.max(1)) as usize;
    let mut err = std::io::stderr().lock();
    let _ = write!(err, "\r[{}{}] {done}/{total} rows", "#".repeat(filled), "-".repeat(width as usize - filled));
    let _ = err.flush();
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // First: in a worker process, this serves as an actor and never returns.
    furrow::enter_child_if_spawned();
    let arg = std::env::args().nth(1);
    let started = Instant::now();
    let (rows, how) = if arg.as_deref() == Some("serial") {
        let rows: Vec<String> = (0..ROWS)
            .map(|r| {
                let row = render(r);
                draw_bar(r as u64 + 1, ROWS as u64);
                row
            })
            .collect();
        (rows, "serially, in this process".to_owned())
    } else {
        let opts = match arg.as_deref().map(str::parse::<usize>) {
            Some(Ok(n)) => PoolOptions::new(n),
            Some(Err(_)) => return Err(format!("usage: sync_pool [WORKERS|serial], not {arg:?}").into()),
            None => PoolOptions::per_cpu(),
        };
        let workers = opts.clone().name("render");
        let rt = furrow::blocking::Runtime::new(furrow::Config::new("sync_pool"))?;
        let opts = workers.progress(|p| draw_bar(p.completed, ROWS as u64));
        let (rows, n) = rt.open_pool(opts, |pool| {
            // Results come back in row order, whichever worker finishes first.
            let rows = pool.map(render_row, (0..ROWS).map(|r| (r,)))?.collect::<Result<Vec<String>, _>>()?;
            furrow::Ok((rows, pool.size()))
        })?;
        rt.shutdown()?;
        (rows, format!("on {n} worker processes"))
    };
    eprintln!();
    for row in &rows {
        println!("{row}");
    }
    eprintln!("{ROWS} rows of {COLS} × {} sub-pixels {how} in {:.2?}", SUB_X * SUB_Y, started.elapsed());
    Ok(())
}

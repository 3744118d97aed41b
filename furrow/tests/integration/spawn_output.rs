//! Where a child's output goes (`SpawnOptions::stdout`/`stderr`): the
//! relay's lines are whole, prefixed, in order per actor, never lost at a
//! crash, never a reason for the child to wait; files and null.
//!
//! A relay writes to its process's own stdout/stderr, so the relaying
//! root is a scenario whose output the test reads.

use anyhow::{Context, ensure};
use furrow::{Error, Output, SpawnOptions};
use std::collections::BTreeMap;
use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

/// Lines per actor in `scenario_relay_three_actors`.
const NUMBERED: usize = 300;
/// The one line of each actor longer than a relayed line may be.
const HUGE: usize = 10_000;

/// Prints `NUMBERED` numbered lines `<name> <i> <body> end`: every 7th has
/// a 3000-byte body (long, still one relayed line); every 5th is written
/// in three pieces, flushed, with a pause, so the relay reads it in parts.
/// Then one line of `HUGE` bytes, which the relay must cut.
#[furrow::remote]
async fn print_numbered() -> furrow::Result<()> {
    let me = furrow::local_aid()?.name;
    let mut out = std::io::stdout();
    for i in 0..NUMBERED {
        if i % 5 == 0 {
            print!("{me} {i} ");
            let _ = out.flush();
            tokio::time::sleep(Duration::from_millis(1)).await;
            print!("in pieces ");
            let _ = out.flush();
            tokio::task::yield_now().await;
            println!("end");
        } else if i % 7 == 0 {
            println!("{me} {i} {} end", "y".repeat(3000));
        } else {
            println!("{me} {i} short end");
        }
        if i % 50 == 0 {
            tokio::task::yield_now().await;
        }
    }
    // "é" is 2 bytes: a cut must fall between characters.
    println!("{}", "é".repeat(HUGE / 2));
    Ok(())
}

/// Three actors relaying their stdout at once (two with their name, one
/// with a prefix of its own), and this root printing lines of its own.
#[furrow_testing::test(scenario)]
async fn scenario_relay_three_actors() -> anyhow::Result<()> {
    furrow::open_nursery(async |n| {
        let a = n.start_actor_with("alpha", SpawnOptions::new().stdout(Output::relay())).await?;
        let b = n.start_actor_with("beta", SpawnOptions::new().stdout(Output::relay())).await?;
        let g = n.start_actor_with("gamma", SpawnOptions::new().stdout(Output::relay_with_prefix("γ | "))).await?;
        let root = async {
            for i in 0..20 {
                println!("root line {i}");
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            furrow::Ok(())
        };
        futures::try_join!(a.run(print_numbered, ()), b.run(print_numbered, ()), g.run(print_numbered, ()), root)?;
        furrow::Ok(())
    })
    .await?;
    Ok(())
}

#[furrow_testing::test]
async fn relayed_lines_are_whole_prefixed_and_in_order_per_actor() -> anyhow::Result<()> {
    let out = furrow_testing::scenario("scenario_relay_three_actors").stderr(Stdio::piped()).output().await?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.success(), "scenario failed: {}\n{stderr}", out.status);
    let text = String::from_utf8(out.stdout).context("the relayed output is valid UTF-8: no character was cut")?;
    let prefixes = [("[alpha] ", "alpha"), ("[beta] ", "beta"), ("γ | ", "gamma")];
    let mut next: BTreeMap<&str, usize> = BTreeMap::new();
    let mut huge: BTreeMap<&str, String> = BTreeMap::new();
    let mut root_lines = 0;
    for line in text.lines() {
        ensure!(line.len() < 4096, "a relayed line of {} bytes: {:.80}…", line.len(), line);
        if line.starts_with("root line ") {
            root_lines += 1;
            continue;
        }
        let Some((prefix, name)) = prefixes.iter().find(|(p, _)| line.starts_with(p)) else {
            anyhow::bail!("a line without an actor's prefix: {line:.120}");
        };
        let rest = &line[prefix.len()..];
        if rest.starts_with('é') {
            huge.entry(name).or_default().push_str(rest);
            continue;
        }
        let want = next.entry(name).or_default();
        let mut words = rest.splitn(3, ' ');
        ensure!(words.next() == Some(*name), "{name}'s line names another actor: {line:.120}");
        let i: usize = words.next().and_then(|w| w.parse().ok()).with_context(|| format!("no number: {line:.120}"))?;
        ensure!(i == *want, "{name}: line {i} where line {want} was due: {line:.120}");
        ensure!(rest.ends_with(" end"), "{name}: line {i} is not whole: {line:.120}");
        *want += 1;
    }
    for (_, name) in prefixes {
        ensure!(next.get(name) == Some(&NUMBERED), "{name}: {:?} of {NUMBERED} lines", next.get(name));
        let h = huge.get(name).map(String::as_str).unwrap_or("");
        ensure!(h == "é".repeat(HUGE / 2), "{name}: the long line came back as {} bytes", h.len());
    }
    ensure!(root_lines == 20, "{root_lines} of the root's own 20 lines");
    Ok(())
}

/// Prints `filler` lines and a line, a last line without a newline to
/// stdout and to stderr, and crashes (SIGABRT): nothing gets to flush
/// anything after.
#[furrow::remote]
async fn crash_with_last_words(filler: usize) {
    for i in 0..filler {
        println!("{i:>8} {}", "f".repeat(90));
    }
    println!("first words");
    print!("last words, no newline");
    let _ = std::io::stdout().flush();
    eprint!("last words on stderr");
    std::process::abort();
}

/// Lines the crasher prints before its last words: 880 KB with their
/// prefix, within the relay's backlog, so none may be lost. (The relay
/// keeps up with them: that the nursery waits for the relay is held by
/// `the_nursery_waits_for_the_relay_to_reach_the_end_of_the_pipe`.)
const CRASH_FILLER: usize = 8000;

#[furrow_testing::test(scenario)]
async fn scenario_relay_crash() -> anyhow::Result<()> {
    furrow::open_nursery(async |n| {
        let opts = SpawnOptions::new().stdout(Output::relay()).stderr(Output::relay());
        let p = n.start_actor_with("crasher", opts).await?;
        p.run(crash_with_last_words, (CRASH_FILLER,)).await?;
        furrow::Ok(())
    })
    .await?;
    Ok(())
}

#[furrow_testing::test]
async fn a_crashing_childs_last_lines_are_relayed_before_its_failure_is_reported() -> anyhow::Result<()> {
    let out = furrow_testing::scenario("scenario_relay_crash").stderr(Stdio::piped()).output().await?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.code() == Some(1), "the scenario fails with the crash: {}\n{stderr}", out.status);
    let (filler, words) = stdout.split_at(stdout.find("[crasher] first words").context("no first words")?);
    ensure!(filler.lines().count() == CRASH_FILLER, "{} of {CRASH_FILLER} lines", filler.lines().count());
    ensure!(words == "[crasher] first words\n[crasher] last words, no newline\n", "stdout ends with {words:?}");
    let last = stderr.find("[crasher] last words on stderr\n").with_context(|| format!("stderr: {stderr}"))?;
    let failed = stderr.find("scenario scenario_relay_crash failed").with_context(|| format!("stderr: {stderr}"))?;
    ensure!(last < failed, "the failure was reported before the child's last line:\n{stderr}");
    ensure!(stderr.contains("SIGABRT"), "{stderr}");
    Ok(())
}

/// Lines in `flood`.
const FLOOD_LINES: usize = 100_000;

/// 100,000 numbered lines of 100 bytes (10 MB), as fast as it can.
#[furrow::remote]
async fn flood() -> usize {
    let mut out = std::io::stdout().lock();
    for i in 0..FLOOD_LINES {
        let _ = writeln!(out, "{i:>8} {}", "f".repeat(90));
    }
    FLOOD_LINES
}

#[furrow_testing::test(scenario)]
async fn scenario_relay_flood() -> anyhow::Result<()> {
    furrow::open_nursery(async |n| {
        let p = n.start_actor_with("flooder", SpawnOptions::new().stdout(Output::relay())).await?;
        let start = Instant::now();
        p.run(flood, ()).await?;
        // Not on stdout: nobody reads it yet.
        eprintln!("flood returned after {} ms", start.elapsed().as_millis());
        // The test reads our stdout now, then closes our stdin: the relay
        // has its backlog written before the child ends (whose relay is
        // waited for at most a second).
        tokio::task::spawn_blocking(|| std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new())).await??;
        anyhow::Ok(())
    })
    .await?;
    Ok(())
}

/// The scenario's stdout is a pipe nobody reads until the child's flood
/// has returned: the child was never blocked, the lines beyond the
/// relay's backlog were dropped, and the markers count exactly those.
#[furrow_testing::test]
async fn a_stdout_nobody_reads_does_not_block_the_child() -> anyhow::Result<()> {
    let mut scenario =
        furrow_testing::scenario("scenario_relay_flood").stdin(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    let stdin = scenario.stdin.take().context("stdin")?;
    let mut stdout = scenario.stdout.take().context("stdout")?;
    let mut stderr = BufReader::new(scenario.stderr.take().context("stderr")?).lines();
    let mut seen = Vec::new();
    let ms: u64 = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = stderr.next_line().await? {
            if let Some(ms) = line.strip_prefix("flood returned after ").and_then(|l| l.strip_suffix(" ms")) {
                return Ok(ms.parse()?);
            }
            seen.push(line);
        }
        anyhow::bail!("the scenario ended before its flood returned: {seen:#?}")
    })
    .await
    .context("the flood did not return within 60 s: the child was blocked")??;
    // Generous: 10 MB of lines take well under a second when nothing
    // blocks, and forever when something does.
    ensure!(ms < 20_000, "the flood took {ms} ms");
    let reading = tokio::spawn(async move {
        let mut text = String::new();
        stdout.read_to_string(&mut text).await.map(|_| text)
    });
    drop(stdin);
    let text = tokio::time::timeout(Duration::from_secs(30), reading).await.context("stdout never ended")???;
    let rest = tokio::time::timeout(Duration::from_secs(30), async {
        let mut rest = Vec::new();
        while let Some(line) = stderr.next_line().await? {
            rest.push(line);
        }
        anyhow::Ok(rest)
    })
    .await??;
    let status = scenario.wait().await?;
    ensure!(status.success(), "scenario: {status}\n{rest:#?}");
    let (mut kept, mut dropped, mut markers) = (0, 0, 0);
    let mut last = None;
    for line in text.lines() {
        let rest = line.strip_prefix("[flooder] ").with_context(|| format!("unprefixed: {line:.100}"))?;
        if let Some(m) = rest.strip_prefix("[furrow: ") {
            let n: usize = m.split_whitespace().next().and_then(|n| n.parse().ok()).context("count")?;
            ensure!(m.ends_with("line(s) dropped: stdout fell 1 MiB behind]"), "{line}");
            dropped += n;
            markers += 1;
            continue;
        }
        let i: usize = rest.split_whitespace().next().and_then(|n| n.parse().ok()).context("numbered")?;
        ensure!(last.is_none_or(|l| i > l), "line {i} after line {last:?}");
        last = Some(i);
        kept += 1;
    }
    println!("kept {kept} lines, dropped {dropped} in {markers} marker(s); the flood took {ms} ms");
    ensure!(dropped > 0, "nothing was dropped: was the pipe ever full?");
    ensure!(kept + dropped == FLOOD_LINES, "kept {kept} + dropped {dropped} != {FLOOD_LINES}");
    Ok(())
}

/// What this actor's stdout and stderr are (`/proc/self/fd/1` and `2`).
#[furrow::remote]
async fn my_outputs() -> (String, String) {
    let target = |fd: u8| std::fs::read_link(format!("/proc/self/fd/{fd}")).map(|p| p.display().to_string());
    (target(1).unwrap_or_default(), target(2).unwrap_or_default())
}

#[furrow::remote]
async fn say(out: String, err: String) {
    println!("{out}");
    eprintln!("{err}");
}

/// A file outside the socket directory (which must end empty), removed
/// when dropped.
struct TempFile(std::path::PathBuf);

impl TempFile {
    fn new(what: &str) -> TempFile {
        TempFile(std::env::temp_dir().join(format!("furrow-spawn-output-{what}-{}", uuid::Uuid::new_v4().simple())))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[furrow_testing::test]
async fn file_output_is_appended_to_and_null_discards() -> anyhow::Result<()> {
    let log = TempFile::new("log");
    std::fs::write(&log.0, "already there\n")?;
    furrow::open_nursery(async |n| {
        let to_file = SpawnOptions::new().stdout(Output::file(&log.0)).stderr(Output::file(&log.0));
        let one = n.start_actor_with("one", to_file.clone()).await?;
        let two = n.start_actor_with("two", to_file).await?;
        let null = n.start_actor_with("quiet", SpawnOptions::new().stdout(Output::Null).stderr(Output::Null)).await?;
        let inherit = n.start_actor("loud").await?;
        one.run(say, ("one out".into(), "one err".into())).await?;
        two.run(say, ("two out".into(), "two err".into())).await?;
        let file = log.0.display().to_string();
        ensure!(one.run(my_outputs, ()).await? == (file.clone(), file.clone()));
        ensure!(null.run(my_outputs, ()).await? == ("/dev/null".into(), "/dev/null".into()));
        let ours = {
            let target = |fd: u8| std::fs::read_link(format!("/proc/self/fd/{fd}")).map(|p| p.display().to_string());
            (target(1)?, target(2)?)
        };
        ensure!(inherit.run(my_outputs, ()).await? == ours, "Inherit is the default");
        Ok(())
    })
    .await?;
    let text = std::fs::read_to_string(&log.0)?;
    let lines: Vec<&str> = text.lines().collect();
    ensure!(lines.first() == Some(&"already there"), "appended, not truncated: {text}");
    for want in ["one out", "one err", "two out", "two err"] {
        ensure!(lines.contains(&want), "{want:?} missing from {text}");
    }
    Ok(())
}

#[furrow_testing::test]
async fn an_output_that_cannot_be_set_up_fails_the_start_naming_it() -> anyhow::Result<()> {
    let r = furrow::open_nursery(async |n| {
        let opts = SpawnOptions::new().stderr(Output::file("/nonexistent/dir/worker.log"));
        n.start_actor_with("worker", opts).await.map(drop)
    })
    .await;
    let e = r.expect_err("no such directory");
    ensure!(matches!(&e, Error::Spawn { lifecycle, .. } if lifecycle.is_empty()), "{e:?}");
    let msg = e.to_string();
    ensure!(msg.contains("/nonexistent/dir/worker.log") && msg.contains("stderr"), "{msg}");

    let r = furrow::open_nursery(async |n| {
        let opts = SpawnOptions::new().stdout(Output::relay_with_prefix("x".repeat(2000)));
        n.start_actor_with("worker", opts).await.map(drop)
    })
    .await;
    let msg = r.expect_err("prefix too long").to_string();
    ensure!(msg.contains("2000 bytes") && msg.contains("at most 1024"), "{msg}");
    Ok(())
}

/// This process's fds that are pipes.
fn pipes() -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc/self/fd")? {
        let e = e?;
        let target = std::fs::read_link(e.path()).map(|p| p.display().to_string()).unwrap_or_default();
        if target.starts_with("pipe:") {
            out.push(format!("{} -> {target}", e.file_name().to_string_lossy()));
        }
    }
    out.sort();
    Ok(out)
}

#[furrow_testing::test]
async fn a_relays_pipes_are_closed_when_its_nursery_returns() -> anyhow::Result<()> {
    // The harness checks every fd after the body; this checks that the
    // relays' pipes are closed by the time the nursery returns (not a
    // moment later), for a child that ended when asked and one that died.
    let before = pipes()?;
    let r = furrow::open_nursery(async |n| {
        let opts = SpawnOptions::new().stdout(Output::relay()).stderr(Output::relay());
        let p = n.start_actor_with("relayed", opts.clone()).await?;
        let (out, err) = p.run(my_outputs, ()).await?;
        ensure!(out.starts_with("pipe:") && err.starts_with("pipe:"), "{out} {err}");
        p.run(say, ("to the relay".into(), "to the relay too".into())).await?;
        let doomed = n.start_actor_with("doomed", opts).await?;
        ensure!(pipes()?.len() == before.len() + 4, "{:?}", pipes()?);
        doomed.run(crash_with_last_words, (0,)).await?;
        Ok(())
    })
    .await;
    ensure!(r.as_ref().is_err_and(|e| e.to_string().contains("SIGABRT")), "{r:?}");
    ensure!(pipes()? == before, "pipes: {before:?} before, {:?} after", pipes()?);
    Ok(())
}

/// Starts `sh`, which inherits this actor's stdout, sleeps `secs` and then
/// prints a line; returns its pid at once.
#[furrow::remote]
async fn leave_behind(secs: f64) -> Result<u32, String> {
    let sh = std::process::Command::new("sh")
        .args(["-c", &format!("sleep {secs}; echo late words")])
        .stdin(std::process::Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    // Not waited for: it outlives this actor, on purpose.
    Ok(sh.id())
}

/// A relaying child leaves a process behind holding its stdout for
/// `SPAWNIO_SLEEP` seconds.
#[furrow_testing::test(scenario)]
async fn scenario_relay_left_behind() -> anyhow::Result<()> {
    let secs: f64 = std::env::var("SPAWNIO_SLEEP")?.parse()?;
    let body_end = furrow::open_nursery(async |n| {
        let p = n.start_actor_with("leaver", SpawnOptions::new().stdout(Output::relay())).await?;
        let pid = p.run(leave_behind, (secs,)).await?;
        eprintln!("left behind {pid}");
        anyhow::Ok(Instant::now())
    })
    .await?;
    eprintln!("nursery returned after {} ms", body_end.elapsed().as_millis());
    Ok(())
}

/// Runs `scenario_relay_left_behind`: its stdout, the pid left behind,
/// and how long its nursery took to return after its body.
async fn left_behind(secs: &str) -> anyhow::Result<(String, u32, u64)> {
    let out = furrow_testing::scenario("scenario_relay_left_behind")
        .env("SPAWNIO_SLEEP", secs)
        .stderr(Stdio::piped())
        .output()
        .await?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.success(), "scenario: {}\n{stderr}", out.status);
    let field = |prefix: &str| {
        stderr.lines().find_map(|l| l.strip_prefix(prefix)).with_context(|| format!("no {prefix:?} in {stderr}"))
    };
    let pid = field("left behind ")?.parse()?;
    let ms = field("nursery returned after ")?.trim_end_matches(" ms").parse()?;
    Ok((String::from_utf8_lossy(&out.stdout).into_owned(), pid, ms))
}

#[furrow_testing::test]
async fn the_nursery_waits_for_the_relay_to_reach_the_end_of_the_pipe() -> anyhow::Result<()> {
    // The child exits at once; the process it left behind writes its line
    // 0.3 s later, within the relay's second.
    let (stdout, pid, ms) = left_behind("0.3").await?;
    furrow_testing::wait_gone(&[pid], Duration::from_secs(5)).map_err(anyhow::Error::msg)?;
    ensure!(stdout == "[leaver] late words\n", "stdout: {stdout:?}");
    ensure!(ms < 5_000, "the nursery took {ms} ms");
    Ok(())
}

#[furrow_testing::test]
async fn a_process_left_holding_the_pipe_holds_the_nursery_up_a_second_at_most() -> anyhow::Result<()> {
    let (stdout, pid, ms) = left_behind("2.5").await?;
    // Not the scenario's own: it ends by itself (its `echo` fails).
    furrow_testing::wait_gone(&[pid], Duration::from_secs(10)).map_err(anyhow::Error::msg)?;
    ensure!(
        stdout
            == "[leaver] [furrow: relay closed: its stdout was still open 1 s after the actor exited \
                (held by a process it started)]\n",
        "stdout: {stdout:?}"
    );
    // A second of relay, and the teardown: well under the 2.5 s the pipe
    // stays open (generous, for a loaded machine).
    ensure!((1_000..2_400).contains(&ms), "the nursery took {ms} ms");
    Ok(())
}

//! Errors crossing several actors keep their origin and record the path
//! (docs/guide.md, rule 2), in a tree whose middle actor opens its own nursery.

use anyhow::{Context, ensure};

#[derive(Debug, serde::Serialize, serde::Deserialize, thiserror::Error, PartialEq)]
#[error("leaf failed on input {input}")]
pub struct LeafError {
    input: u32,
}

#[furrow::remote]
async fn leaf(input: u32) -> Result<u32, LeafError> {
    if input == 13 { Err(LeafError { input }) } else { Ok(input * 2) }
}

/// Runs in the middle actor: starts its own child and calls it.
#[furrow::remote]
async fn middle(input: u32) -> furrow::Result<(u32, u32)> {
    furrow::open_nursery(async |n| {
        let p = n.start_actor("leaf").await?;
        let v = p.run(leaf, (input,)).await?; // a remote error passes through here
        Ok((v, p.aid().pid))
    })
    .await
}

#[furrow_testing::test]
async fn nested_call_and_relayed_error() -> anyhow::Result<()> {
    furrow::open_nursery(async |n| {
        let mid = n.start_actor("middle").await?;
        let (v, leaf_pid) = mid.run(middle, (4,)).await?;
        ensure!(v == 8);
        ensure!(leaf_pid != mid.aid().pid && leaf_pid != std::process::id());

        let err = mid.run(middle, (13,)).await.unwrap_err();
        let r = err.as_remote().context("remote error")?;
        ensure!(r.src.name == "leaf", "raised in the leaf: {err}");
        ensure!(r.kind().as_str().ends_with("LeafError"), "{}", r.kind());
        let names: Vec<&str> = r.relay_path.iter().map(|a| a.name.as_str()).collect();
        ensure!(names == ["leaf", "middle"], "relay path {names:?}");
        ensure!(r.relay_path[1] == *mid.aid());
        ensure!(r.downcast::<LeafError>() == Some(LeafError { input: 13 }), "typed through two hops");
        ensure!(err.to_string().contains("relayed via leaf -> middle"), "{err}");
        // The middle actor reaped its leaf before answering: it is still
        // serving and can do it again.
        ensure!(mid.run(middle, (5,)).await?.0 == 10);
        Ok(())
    })
    .await
}

/// Fails at a wall-clock instant, blocking its thread until then so that
/// nothing (not even a cancel request) stops it first: two of these in one
/// nursery fail "at once", and the nursery reports both (`Multiple`).
#[furrow::remote]
async fn leaf_fail_at(unix_ms: u64, input: u32) -> Result<(), LeafError> {
    let now = unix_ms_now();
    std::thread::sleep(std::time::Duration::from_millis(unix_ms.saturating_sub(now)));
    Err(LeafError { input })
}

fn unix_ms_now() -> u64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    now.map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Runs in a middle actor: its own nursery fails with both leaves' errors,
/// which it passes on with `?`.
#[furrow::remote]
async fn middle_pair(a: u32, b: u32) -> furrow::Result<()> {
    // Far enough ahead that both leaves have started (also on a loaded
    // machine) before either fails.
    let at = unix_ms_now() + 800;
    furrow::open_nursery(async |n| {
        let _a = n.run_in_actor(leaf_fail_at, (at, a));
        let _b = n.run_in_actor(leaf_fail_at, (at, b));
        std::future::pending::<()>().await;
        furrow::Ok(())
    })
    .await?;
    Ok(())
}

/// One more hop: runs `middle_pair` in a middle actor of its own.
#[furrow::remote]
async fn upper_pair(a: u32, b: u32) -> furrow::Result<()> {
    furrow::open_nursery(async |n| {
        let mid = n.start_actor("middle").await?;
        mid.run(middle_pair, (a, b)).await?;
        Ok(())
    })
    .await
}

/// `err` must be the two leaf errors of `middle_pair(1, 2)`, each with its
/// own origin, relayed through `via` (the actors after the leaf, in order);
/// its text must list both with their origin.
fn check_two_leaves(err: &furrow::Error, via: &[&furrow::Aid]) -> anyhow::Result<()> {
    let furrow::Error::Multiple(errs) = err else { anyhow::bail!("expected both leaf errors, got {err:?}") };
    ensure!(errs.len() == 2 && err.errors().len() == 2, "{err}");
    let mut inputs = Vec::new();
    let mut expected_text = String::from("2 actors failed:");
    for (i, e) in errs.iter().enumerate() {
        let r = e.as_remote().with_context(|| format!("leaf error {i} is remote: {e}"))?;
        ensure!(via.iter().all(|a| r.src != **a && r.src.pid != a.pid), "raised in a leaf, not {}: {e}", r.src);
        ensure!(r.kind().as_str().ends_with("LeafError"), "{}", r.kind());
        let mut path = vec![&r.src];
        path.extend(via.iter().copied());
        ensure!(r.relay_path.iter().collect::<Vec<_>>() == path, "relay path {:?} of {e}", r.relay_path);
        let value = r.downcast::<LeafError>().context("the leaf's value, typed, through every hop")?;
        ensure!(r.message == format!("leaf failed on input {}", value.input), "{}", r.message);
        let names: Vec<&str> = path.iter().map(|a| a.name.as_str()).collect();
        expected_text.push_str(&format!(
            "\n  {}. {} in actor {}: leaf failed on input {} (relayed via {})",
            i + 1,
            r.kind(),
            r.src,
            value.input,
            names.join(" -> ")
        ));
        inputs.push(value.input);
    }
    ensure!(errs[0].as_remote().map(|r| &r.src) != errs[1].as_remote().map(|r| &r.src), "two leaves: {err}");
    inputs.sort();
    ensure!(inputs == [1, 2], "{err}");
    ensure!(err.to_string() == expected_text, "text:\n{err}\nexpected:\n{expected_text}");
    Ok(())
}

#[furrow_testing::test]
async fn a_relayed_multiple_keeps_each_leaf_origin() -> anyhow::Result<()> {
    furrow::open_nursery(async |n| {
        let mid = n.start_actor("middle").await?;
        let err = mid.run(middle_pair, (1, 2)).await.expect_err("both leaves fail");
        check_two_leaves(&err, &[mid.aid()])?;
        // The middle actor is still serving.
        ensure!(mid.run(middle, (5,)).await?.0 == 10);
        Ok(())
    })
    .await
}

#[furrow_testing::test]
async fn a_multiple_relayed_twice_keeps_each_leaf_origin() -> anyhow::Result<()> {
    furrow::open_nursery(async |n| {
        let upper = n.start_actor("upper").await?;
        let err = upper.run(upper_pair, (1, 2)).await.expect_err("both leaves fail");
        // The middle actor (started by `upper`) is the second hop of each.
        let furrow::Error::Multiple(errs) = &err else { anyhow::bail!("expected both leaf errors, got {err:?}") };
        let r = errs[0].as_remote().context("remote")?;
        ensure!(r.relay_path.len() == 3, "{err}");
        let mid = r.relay_path[1].clone();
        ensure!(mid.name == "middle" && mid.pid != upper.aid().pid, "{err}");
        check_two_leaves(&err, &[&mid, upper.aid()])?;
        Ok(())
    })
    .await
}

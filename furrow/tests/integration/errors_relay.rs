//! Errors crossing several actors keep their origin and record the path
//! (DESIGN rule 2), in a tree whose middle actor opens its own nursery.

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
        ensure!(r.boxed_type.ends_with("LeafError"), "{}", r.boxed_type);
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

//! A registry listing larger than the frame limit (issue 14, defect 1):
//! `list_actors` hung (the registrar's one answer was over its limit and
//! dropped), and so did `furrow ls`. Listings now come in pages that fit
//! both sides' limits.

use crate::registry_wire::{Info, Query, Register};
use anyhow::{Context as _, bail, ensure};
use furrow::ErrorKind;
use furrow::proto::Aid;
use furrow::{Addr, Lookup};
use std::time::Duration;

/// The test's frame limit: small, so a listing of a few megabytes is many
/// times over it.
const LIMIT: usize = 256 << 10;
/// Entries registered, each with a name of [`NAME_LEN`] bytes: about 8 MB,
/// some 32 times the limit.
const ENTRIES: usize = 2000;
const NAME_LEN: usize = 4000;

/// The start of the name of every actor listed (whole names would not fit
/// in the answer).
#[furrow::remote]
async fn list_name_prefixes() -> furrow::Result<Vec<String>> {
    Ok(furrow::list_actors().await?.into_iter().map(|a| a.aid.name.chars().take(12).collect()).collect())
}

fn name(i: usize) -> String {
    format!("entry-{i:05}-{}", "n".repeat(NAME_LEN - 12))
}

/// The test's body, as the root of a tree whose frame limit is [`LIMIT`].
async fn listing_in_pages() -> anyhow::Result<()> {
    let registry = furrow_testing::root_config().resolved_registry()?.into_iter().next().context("registry")?;
    furrow::open_nursery(async |n| {
        let lister = n.start_actor("lister").await?;
        // Entries registered over a connection of our own to the registry
        // (they leave when it closes, at the end of this block).
        furrow::connect(&registry, async |reg| {
            for batch in (0..ENTRIES).collect::<Vec<_>>().chunks(100) {
                let nowhere: Addr = "uds:///nowhere.sock".parse()?;
                let requests: Vec<Register> = batch
                    .iter()
                    .map(|&i| Register { info: Info { aid: Aid::new(name(i), 1), addrs: vec![nowhere.clone()] } })
                    .collect();
                let calls = requests.iter().map(|r| reg.run_by_name::<_, bool>("furrow::registry::register", r));
                futures::future::try_join_all(calls).await?;
            }
            // Another actor lists them all, page by page: each entry once,
            // and the tree's own two actors.
            let listed = tokio::time::timeout(Duration::from_secs(60), lister.run(list_name_prefixes, ()))
                .await
                .context("list_actors hung")??;
            ensure!(listed.len() == ENTRIES + 2, "{} listed", listed.len());
            // (Registered 100 at a time: the order within a batch is the
            // scheduler's; the order of a listing is held by the
            // registrar's unit tests.)
            let mut entries: Vec<&String> = listed.iter().filter(|s| s.starts_with("entry-")).collect();
            entries.sort();
            let want: Vec<String> = (0..ENTRIES).map(|i| name(i).chars().take(12).collect()).collect();
            ensure!(entries.iter().map(|s| s.as_str()).eq(want.iter().map(String::as_str)), "each entry once");
            for actor in ["test-root", "lister"] {
                ensure!(listed.iter().any(|s| s == actor), "{actor} missing");
            }
            // An asker of the earlier kind (one `query`, one answer): an
            // error saying how large the answer was, never a hang.
            let old = tokio::time::timeout(
                Duration::from_secs(60),
                reg.run_by_name::<_, Vec<serde::de::IgnoredAny>>(
                    "furrow::registry::query",
                    &Query { who: Lookup::All },
                ),
            )
            .await
            .context("the one-answer query hung")?;
            match old {
                Err(furrow::Error::Remote(e)) if e.kind() == &ErrorKind::FrameTooLarge => {
                    let want = "the result of `furrow::registry::query` of ";
                    ensure!(e.message.starts_with(want), "{}", e.message);
                    ensure!(e.message.contains(&format!("exceeds the frame limit of {LIMIT} bytes")), "{}", e.message);
                }
                other => bail!("expected a FrameTooLarge error, got {:?}", other.map(|v| v.len())),
            }
            // The registrar itself lists them too (no frames involved).
            ensure!(furrow::list_actors().await?.len() == ENTRIES + 2);
            Ok(())
        })
        .await
    })
    .await
}

#[furrow_testing::test]
fn a_listing_over_the_frame_limit_comes_in_pages() -> anyhow::Result<()> {
    let rt = furrow::blocking::Runtime::new(furrow_testing::root_config().max_frame(LIMIT))?;
    rt.block_on(async { Ok(listing_in_pages().await.map_err(|e| format!("{e:?}"))) })?.map_err(anyhow::Error::msg)
}

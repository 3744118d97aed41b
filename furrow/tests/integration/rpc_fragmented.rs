//! Every read path survives bytes arriving one at a time (seed 000).
//!
//! `FURROW_FRAGMENT=1` puts every channel of the tree (the root and each
//! child, which inherit the environment) behind a transport that reads and
//! writes one byte per operation.

#[furrow::remote]
async fn concat(parts: Vec<String>, sep: String) -> String {
    parts.join(&sep)
}

#[furrow::remote]
async fn fail_with(message: String) -> Result<(), String> {
    Err(message)
}

#[furrow_testing::test(env = "FURROW_FRAGMENT=1")]
async fn one_byte_reads_and_writes() -> anyhow::Result<()> {
    furrow::open_nursery(async |n| {
        let a = n.start_actor("frag-a").await?;
        let b = n.start_actor("frag-b").await?;
        let parts: Vec<String> = (0..200).map(|i| format!("part{i}")).collect();
        let expected = parts.join("-");
        let calls = (0..20).map(|i| {
            let p = if i % 2 == 0 { a.clone() } else { b.clone() };
            let parts = parts.clone();
            async move { p.run(concat, (parts, "-".to_string())).await }
        });
        for r in futures::future::try_join_all(calls).await? {
            assert_eq!(r, expected);
        }
        let err = a.run(fail_with, ("boom".into(),)).await.unwrap_err();
        assert!(err.to_string().contains("boom"), "{err}");
        Ok(())
    })
    .await
}

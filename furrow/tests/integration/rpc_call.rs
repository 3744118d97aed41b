//! Calling functions in other actors (docs/guide.md, rule 1, issue "foundation").

use anyhow::{Context, ensure};
use furrow::Error;
use furrow::ErrorKind;

#[furrow::remote]
pub async fn add(a: i64, b: i64) -> i64 {
    a + b
}

#[furrow::remote]
pub async fn greet(name: String, times: u32) -> Vec<String> {
    (0..times).map(|i| format!("hello {name} #{i}")).collect()
}

#[furrow::remote]
pub async fn whoami() -> (String, u32) {
    ("worker".into(), std::process::id())
}

#[furrow::remote]
async fn slow_echo(x: u64, delay_ms: u64) -> u64 {
    tokio::time::sleep(std::time::Duration::from_millis(delay_ms)).await;
    x
}

/// Bytes of `len` bytes, varied (so a shifted or repeated slice shows).
fn varied(len: usize, salt: u8) -> furrow::Bytes {
    furrow::Bytes::from((0..len).map(|i| (i % 251) as u8 ^ salt).collect::<Vec<u8>>())
}

/// The bytes reversed, and one more argument after them (so the payload
/// is not the last thing in the frame).
#[furrow::remote]
async fn reverse_bytes(data: furrow::Bytes, salt: u8) -> (furrow::Bytes, u8) {
    let mut v = data.to_vec();
    v.reverse();
    (furrow::Bytes::from(v), salt)
}

#[furrow_testing::test]
async fn byte_payloads_arrive_whole_in_both_directions() -> anyhow::Result<()> {
    furrow::open_nursery(async |n| {
        let p = n.start_actor("bytes").await?;
        // Around the size from which a received value shares the frame's
        // buffer (1 KiB), and large values that span many reads.
        for (i, len) in [0, 1, 1023, 1024, 1025, 64 * 1024, (1 << 20) + 7, 5 << 20].into_iter().enumerate() {
            let data = varied(len, i as u8);
            let (back, salt) = p.run(reverse_bytes, (data.clone(), i as u8)).await?;
            let mut want = data.to_vec();
            want.reverse();
            ensure!(back == want, "{len} bytes came back wrong");
            ensure!(salt == i as u8, "the argument after the bytes was lost");
        }
        Ok(())
    })
    .await
}

#[furrow_testing::test]
async fn call_returns_value() -> anyhow::Result<()> {
    furrow::open_nursery(async |n| {
        let p = n.start_actor("adder").await?;
        assert_eq!(p.run(add, (1, 2)).await?, 3);
        assert_eq!(p.run(add, (-5, 2)).await?, -3);
        let g = p.run(greet, ("ann".to_string(), 2)).await?;
        assert_eq!(g, vec!["hello ann #0".to_string(), "hello ann #1".to_string()]);
        // It really ran in another process.
        let (_, pid) = p.run(whoami, ()).await?;
        assert_ne!(pid, std::process::id());
        assert_eq!(pid, p.aid().pid);
        Ok(())
    })
    .await
}

#[furrow_testing::test]
async fn handle_stays_a_local_function() -> anyhow::Result<()> {
    assert_eq!(add(20, 22).await, 42);
    assert!(add.name().ends_with("rpc_call::add"), "{}", add.name());
    assert_eq!(add.params(), &["a", "b"]);
    Ok(())
}

#[furrow_testing::test]
async fn thousand_concurrent_calls_on_one_portal() -> anyhow::Result<()> {
    furrow::open_nursery(async |n| {
        let p = n.start_actor("echo").await?;
        let calls = (0..1000u64).map(|i| {
            let p = p.clone();
            async move { p.run(slow_echo, (i, i % 7)).await }
        });
        let results = futures::future::try_join_all(calls).await?;
        let expected: Vec<u64> = (0..1000).collect();
        assert_eq!(results, expected);
        Ok(())
    })
    .await
}

#[furrow_testing::test]
async fn unknown_function_is_a_clear_error() -> anyhow::Result<()> {
    furrow::open_nursery(async |n| {
        let p = n.start_actor("plain").await?;
        let err = p.run_by_name::<_, i64>("no::such::function", &()).await.unwrap_err();
        let remote = err.as_remote().context("expected a remote error")?.clone();
        ensure!(remote.kind() == &ErrorKind::FunctionNotFound, "{err}");
        ensure!(remote.message.contains("no::such::function"), "{err}");
        ensure!(remote.src == *p.aid());
        // The callee is still serving.
        assert_eq!(p.run(add, (2, 2)).await?, 4);
        Ok(())
    })
    .await
}

#[furrow_testing::test]
async fn wrong_argument_types_are_refused_naming_the_field() -> anyhow::Result<()> {
    #[derive(serde::Serialize)]
    struct WrongType {
        a: &'static str,
        b: i64,
    }
    #[derive(serde::Serialize)]
    struct Missing {
        a: i64,
    }
    #[derive(serde::Serialize)]
    struct Extra {
        a: i64,
        b: i64,
        c: i64,
    }
    furrow::open_nursery(async |n| {
        let p = n.start_actor("strict").await?;
        let name = add.name();
        let e = p.run_by_name::<_, i64>(name, &WrongType { a: "one", b: 2 }).await.unwrap_err();
        let r = e.as_remote().context("remote error")?;
        ensure!(r.kind() == &ErrorKind::MsgTypeError, "{e}");
        ensure!(r.message.contains("`a`"), "message should name field a: {e}");
        let e = p.run_by_name::<_, i64>(name, &Missing { a: 1 }).await.unwrap_err();
        ensure!(e.to_string().contains("missing field `b`"), "{e}");
        let e = p.run_by_name::<_, i64>(name, &Extra { a: 1, b: 2, c: 3 }).await.unwrap_err();
        ensure!(e.to_string().contains("unknown field `c`"), "{e}");
        // A result decoded as the wrong type is a local MsgType error.
        let e = p.run_by_name::<_, String>(name, &Missing2 { a: 1, b: 2 }).await.unwrap_err();
        ensure!(matches!(e, Error::MsgType(_)), "{e:?}");
        // And the callee keeps serving.
        assert_eq!(p.run(add, (1, 1)).await?, 2);
        Ok(())
    })
    .await
}

#[derive(serde::Serialize)]
struct Missing2 {
    a: i64,
    b: i64,
}

#[furrow_testing::test]
async fn dropped_call_cancels_the_remote_task() -> anyhow::Result<()> {
    furrow::open_nursery(async |n| {
        let p = n.start_actor("sleeper").await?;
        // A call that would take a minute, abandoned after 50 ms.
        let r = tokio::time::timeout(std::time::Duration::from_millis(50), p.run(slow_echo, (1, 60_000))).await;
        assert!(r.is_err());
        // The portal still works, and the nursery ends promptly (the
        // abandoned task does not hold the actor up).
        assert_eq!(p.run(add, (3, 4)).await?, 7);
        Ok(())
    })
    .await
}

//! Who cancelled a context is always known (docs/guide.md, rules 4, 5, 5a, 10).

use anyhow::{Context as _, bail, ensure};
use furrow::{Aid, Context, Error, Outcome};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// In the callee's process: who cancelled the last context it served.
static LAST_CANCELLER: Mutex<Option<Aid>> = Mutex::new(None);

#[furrow::remote]
async fn last_canceller() -> Option<Aid> {
    LAST_CANCELLER.lock().unwrap().clone()
}

/// Streams forever until cancelled; records who cancelled it, even when
/// the cancellation comes before it could call `started`.
#[furrow::context]
async fn forever(ctx: Context) -> furrow::Result<()> {
    let watch = ctx.clone();
    let record = async move {
        let by = watch.cancelled().await;
        *LAST_CANCELLER.lock().unwrap() = Some(by);
        std::future::pending::<()>().await
    };
    let work = async {
        ctx.started(&()).await?;
        ctx.open_stream(async |s| {
            let mut i = 0u64;
            loop {
                s.send(&i).await?;
                i += 1;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
    };
    // `biased`: the watcher is polled first, so a cancellation that is
    // already in is recorded before `work` can fail on it.
    tokio::select! {
        biased;
        () = record => unreachable!(),
        r = work => r,
    }
}

/// Cancels itself after `after` messages.
#[furrow::context]
async fn self_cancelling(ctx: Context, after: u64) -> furrow::Result<()> {
    ctx.started(&()).await?;
    ctx.open_stream(async |s| {
        for i in 0..after {
            s.send(&i).await?;
        }
        ctx.cancel().await?;
        // Keep going: the runtime ends this task after the grace period.
        std::future::pending::<()>().await;
        Ok(())
    })
    .await
}

/// Tries to open a stream after its own cancellation.
#[furrow::context]
async fn stream_after_cancel(ctx: Context) -> furrow::Result<String> {
    ctx.started(&()).await?;
    ctx.cancel().await?;
    let r = ctx.open_stream(async |_s| furrow::Ok(())).await;
    Ok(format!("{r:?}"))
}

/// Asks the actor at `addr` to cancel itself (a third party).
#[furrow::remote]
async fn cancel_actor_at(addr: furrow::Addr) -> furrow::Result<Aid> {
    furrow::connect(&addr, async |p| p.cancel_actor().await).await?;
    furrow::local_aid()
}

#[furrow_testing::test]
async fn self_cancel_is_absorbed() -> anyhow::Result<()> {
    furrow::open_nursery(async |n| {
        let p = n.start_actor("endless").await?;
        let me = furrow::local_aid()?;
        let value = p
            .open_context(forever, (), async |ctx, (): ()| {
                let got = ctx
                    .open_stream(async |s| {
                        let mut got = 0;
                        while let Some(_x) = s.recv::<u64>().await? {
                            got += 1;
                            if got == 5 {
                                ctx.cancel().await?;
                            }
                        }
                        // Ended as if closed: no error.
                        furrow::Ok(got)
                    })
                    .await?;
                ensure!(got >= 5);
                ensure!(ctx.wait_for_result::<()>().await? == Outcome::Cancelled { canceller: me.clone() });
                ensure!(ctx.cancel_called() && ctx.cancel_acked() && ctx.cancelled_caught());
                ensure!(ctx.canceller() == Some(me.clone()));
                Ok("the scope's own value")
            })
            .await?;
        ensure!(value == "the scope's own value");
        // The callee saw the cancellation, and who asked.
        ensure!(p.run(last_canceller, ()).await? == Some(me));
        Ok(())
    })
    .await
}

#[furrow_testing::test]
async fn peer_self_cancel_is_raised() -> anyhow::Result<()> {
    furrow::open_nursery(async |n| {
        let p = n.start_actor("quitter").await?;
        let r = p
            .open_context(self_cancelling, (3,), async |ctx, (): ()| {
                ctx.open_stream(async |s| {
                    while let Some(_x) = s.recv::<u64>().await? {}
                    Ok(())
                })
                .await
            })
            .await;
        match r {
            Err(Error::ContextCancelled { canceller, .. }) => {
                ensure!(canceller == *p.aid(), "canceller should be the callee, got {canceller}")
            }
            other => bail!("expected ContextCancelled raised, got {other:?}"),
        }
        Ok(())
    })
    .await
}

#[furrow_testing::test]
async fn third_actor_cancel_is_raised_naming_it() -> anyhow::Result<()> {
    furrow::open_nursery(async |n| {
        let target = n.start_actor("target").await?;
        let third = n.start_actor("third").await?;
        let addr = target.addrs()[0].clone();
        let r = target
            .open_context(forever, (), async |ctx, (): ()| {
                ctx.open_stream(async |s| {
                    let first = s.recv::<u64>().await?;
                    ensure!(first == Some(0));
                    // Someone else cancels the whole target actor.
                    let who = third.run(cancel_actor_at, (addr.clone(),)).await?;
                    ensure!(who == *third.aid());
                    while let Some(_x) = s.recv::<u64>().await? {}
                    Ok(())
                })
                .await
            })
            .await;
        let err = r.expect_err("a cancel by a third actor must be raised");
        match err.downcast_ref::<Error>() {
            Some(Error::ContextCancelled { canceller, .. }) => {
                ensure!(canceller == third.aid(), "canceller {canceller}, expected {}", third.aid())
            }
            _ => bail!("expected ContextCancelled, got {err:?}"),
        }
        Ok(())
    })
    .await
}

#[furrow_testing::test]
async fn opener_error_cancels_the_callee_and_is_not_masked() -> anyhow::Result<()> {
    furrow::open_nursery(async |n| {
        let p = n.start_actor("victim").await?;
        let me = furrow::local_aid()?;
        let r = p
            .open_context(forever, (), async |ctx, (): ()| {
                ctx.open_stream(async |s| {
                    s.recv::<u64>().await?;
                    s.recv::<u64>().await?;
                    Err::<(), anyhow::Error>(anyhow::anyhow!("opener gave up"))
                })
                .await
            })
            .await;
        let err = r.expect_err("the body's error");
        ensure!(err.to_string() == "opener gave up", "not masked: {err}");
        // The callee observed its cancellation, by us.
        ensure!(p.run(last_canceller, ()).await? == Some(me));
        Ok(())
    })
    .await
}

#[furrow_testing::test]
async fn dropped_open_context_cancels_the_callee() -> anyhow::Result<()> {
    furrow::open_nursery(async |n| {
        let p = n.start_actor("abandoned").await?;
        let me = furrow::local_aid()?;
        let r = tokio::time::timeout(
            Duration::from_millis(100),
            p.open_context(forever, (), async |ctx, (): ()| {
                ctx.open_stream(async |s| {
                    while let Some(_x) = s.recv::<u64>().await? {}
                    furrow::Ok(())
                })
                .await
            }),
        )
        .await;
        ensure!(r.is_err(), "timed out");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let seen = p.run(last_canceller, ()).await?;
            if seen == Some(me.clone()) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                // Seen once in ~250 loaded full-suite runs, never since:
                // say whether the callee's context is still open (the
                // cancel never reached it) or over (it ended unrecorded).
                let st = p.stats().await?;
                bail!(
                    "callee never saw the cancellation (its record: {seen:?}); callee now serves {} context(s) \
                     and {} call(s)",
                    st.contexts_served,
                    st.calls_served
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
}

#[furrow_testing::test]
async fn stream_after_cancel_is_an_error() -> anyhow::Result<()> {
    furrow::open_nursery(async |n| {
        let p = n.start_actor("late").await?;
        // Opener side: cancel, then try to open the stream.
        p.open_context(forever, (), async |ctx, (): ()| {
            ctx.cancel().await?;
            let e = ctx.open_stream(async |_s| Ok(())).await.unwrap_err();
            ensure!(matches!(e, Error::ContextCancelled { .. }), "{e:?}");
            Ok(())
        })
        .await?;
        // Callee side: after cancelling itself the callee's attempt fails
        // the same way (it reports what it got; it returns without another
        // await, so its completion wins the race with its own cancel).
        let got = p
            .open_context(stream_after_cancel, (), async |ctx, (): ()| match ctx.wait_for_result::<String>().await {
                Ok(Outcome::Returned(s)) => Ok(s),
                other => bail!("unexpected outcome {other:?}"),
            })
            .await?;
        ensure!(got.starts_with("Err(context cancelled by late"), "callee's open_stream gave {got}");
        Ok(())
    })
    .await
}

#[furrow_testing::test]
async fn sigkilled_callee_mid_stream_is_transport_closed_from_the_socket() -> anyhow::Result<()> {
    // The context runs in a task of its own: the crash also fails the
    // nursery (one cancels all), which cancels the nursery's body, and we
    // want to see both outcomes.
    let (tx, rx) = tokio::sync::oneshot::channel();
    let r = furrow::open_nursery(async |n| {
        let p = n.start_actor("doomed").await?;
        let pid = p.aid().pid as i32;
        tokio::spawn(async move {
            let mut killed_at = None;
            let r = p
                .open_context(forever, (), async |ctx, (): ()| {
                    ctx.open_stream(async |s| {
                        s.recv::<u64>().await?;
                        // SAFETY: killing our own child process.
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                        killed_at = Some(Instant::now());
                        while s.recv::<u64>().await?.is_some() {}
                        Ok(())
                    })
                    .await
                })
                .await;
            let _ = tx.send((r, killed_at.map(|t| t.elapsed())));
        });
        std::future::pending::<()>().await;
        Ok(())
    })
    .await;
    let (ctx_result, took) = rx.await?;
    let took = took.context("the kill happened")?;
    // Seen from the socket's end (its close or reset), not from the
    // keepalive giving the peer up seconds later: the reason says which,
    // so this needs no tight bound on the time (one near a second flaked
    // on a loaded machine).
    println!("TransportClosed {took:?} after the SIGKILL: {ctx_result:?}");
    match &ctx_result {
        Err(Error::TransportClosed { reason, .. }) => {
            ensure!(reason.contains("peer closed the connection") && !reason.contains("silent"), "{reason}")
        }
        other => bail!("expected TransportClosed, got {other:?}"),
    }
    ensure!(took < Duration::from_secs(10), "TransportClosed after {took:?}");
    match r {
        Err(Error::ActorExited { actor, status, .. }) => {
            ensure!(actor.name == "doomed" && status.contains("SIGKILL"), "{actor} {status}")
        }
        other => bail!("the nursery should fail with the crash: {other:?}"),
    }
    Ok(())
}

/// Streams a number every 5 ms until cancelled.
#[furrow::context]
pub async fn endless(ctx: furrow::Context) -> furrow::Result<()> {
    ctx.started(&()).await?;
    ctx.open_stream(async |s| {
        for i in 0u64.. {
            s.send(&i).await?;
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        Ok(())
    })
    .await
}

#[furrow_testing::test]
async fn a_dropped_context_with_a_fan_out_still_cancels_its_callee() -> anyhow::Result<()> {
    use std::time::{Duration, Instant};
    furrow::open_nursery(async |n| {
        let p = n.start_actor("endless").await?;
        let opened = tokio::time::timeout(
            Duration::from_millis(300),
            p.open_context(endless, (), async |ctx, ()| {
                ctx.open_stream(async |s| {
                    let mut extra = s.subscribe();
                    loop {
                        let (a, b) = tokio::join!(s.recv::<u64>(), extra.recv::<u64>());
                        anyhow::ensure!(a? == b?, "the subscriber saw another item");
                    }
                    #[allow(unreachable_code)]
                    Ok(())
                })
                .await
            }),
        )
        .await;
        anyhow::ensure!(opened.is_err(), "the scope should run until the timeout");
        // Dropping the scope (stream, pump and all) cancels the callee: its
        // context ends.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let open = p.stats().await?.contexts();
            if open == 0 {
                break;
            }
            anyhow::ensure!(Instant::now() < deadline, "the callee's context is still open ({open})");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    })
    .await
}

/// Calls `started` and returns `value` at once.
#[furrow::context]
pub async fn return_now(ctx: Context, value: u64) -> furrow::Result<u64> {
    ctx.started(&()).await?;
    Ok(value)
}

#[furrow_testing::test]
async fn cancel_acked_is_false_for_a_callee_that_had_returned() -> anyhow::Result<()> {
    furrow::open_nursery(async |n| {
        let p = n.start_actor("quick").await?;
        p.open_context(return_now, (7,), async |ctx, (): ()| {
            // The callee returned long ago; its outcome is not read yet.
            tokio::time::sleep(Duration::from_millis(300)).await;
            ctx.cancel().await?;
            ensure!(ctx.cancel_called());
            ensure!(!ctx.cancel_acked(), "the cancel cannot have reached a callee that had returned");
            // Too late to cancel: the return stands, and nothing was absorbed.
            ensure!(ctx.wait_for_result::<u64>().await? == Outcome::Returned(7));
            ensure!(!ctx.cancelled_caught());
            Ok(())
        })
        .await
    })
    .await
}

//! `furrow dump [ACTOR…]`: what each chosen actor is doing now.
//!
//! The actors are chosen from the registry listing by name, pid or uuid
//! prefix (every registered actor when none is named); each is asked for
//! its dump ([`furrow::Portal::dump`]) over a connection of its own, all at
//! once, each bounded. An actor that does not answer is reported as such,
//! not skipped: a stuck actor that cannot even answer is the finding.

use furrow::ActorInfo;
use furrow::dump::ActorDump;
use std::time::Duration;

/// The actors `selectors` name, in listing order: each selector must
/// match at least one (a name, a pid, or the start of a uuid).
pub(crate) fn select<'a>(actors: &'a [ActorInfo], selectors: &[String]) -> Result<Vec<&'a ActorInfo>, String> {
    if selectors.is_empty() {
        return Ok(actors.iter().collect());
    }
    let matches = |a: &ActorInfo, s: &str| {
        a.aid.name == s
            || a.aid.pid.to_string() == s
            || (s.len() >= 4 && a.aid.uuid.simple().to_string().starts_with(&s.replace('-', "").to_lowercase()))
    };
    for s in selectors {
        if !actors.iter().any(|a| matches(a, s)) {
            return Err(format!("no registered actor is named `{s}`, has pid {s} or a uuid starting with it"));
        }
    }
    Ok(actors.iter().filter(|a| selectors.iter().any(|s| matches(a, s))).collect())
}

/// Each actor's dump, or why there is none, asked all at once.
pub(crate) async fn dump_all(actors: &[&ActorInfo], bound: Duration) -> Vec<Result<ActorDump, String>> {
    let asks = actors.iter().map(|a| async move {
        match tokio::time::timeout(bound, furrow::connect_actor(a, async |p| p.dump().await)).await {
            Ok(Ok(d)) => Ok(d),
            Ok(Err(e)) => Err(format!("actor {} (pid {}): no dump: {e}", a.aid.name, a.aid.pid)),
            Err(_) => Err(format!("actor {} (pid {}): no answer within {bound:?}", a.aid.name, a.aid.pid)),
        }
    });
    futures::future::join_all(asks).await
}

/// The dumps as text, one block per actor, separated by a blank line.
pub(crate) fn text(dumps: &[Result<ActorDump, String>]) -> String {
    let blocks: Vec<String> = dumps
        .iter()
        .map(|d| match d {
            Ok(d) => d.to_string(),
            Err(why) => format!("{why}\n"),
        })
        .collect();
    blocks.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use furrow::Aid;

    fn info(name: &str, pid: u32) -> ActorInfo {
        serde_json::from_value(serde_json::json!({
            "aid": Aid::new(name, pid),
            "addrs": [],
        }))
        .unwrap_or_else(|e| panic!("ActorInfo from JSON: {e}"))
    }

    #[test]
    fn actors_are_chosen_by_name_pid_or_uuid_prefix() {
        let all = [info("root", 10), info("worker", 11), info("worker", 12)];
        let pick = |sel: &[&str]| {
            let sel: Vec<String> = sel.iter().map(|s| (*s).to_owned()).collect();
            select(&all, &sel).map(|v| v.iter().map(|a| a.aid.pid).collect::<Vec<_>>())
        };
        assert_eq!(pick(&[]), Ok(vec![10, 11, 12]));
        assert_eq!(pick(&["worker"]), Ok(vec![11, 12]));
        assert_eq!(pick(&["12", "root"]), Ok(vec![10, 12]));
        let uuid = all[1].aid.uuid.to_string();
        assert_eq!(pick(&[&uuid[..8]]), Ok(vec![11]));
        assert!(pick(&["nobody"]).is_err_and(|e| e.contains("`nobody`")));
    }
}

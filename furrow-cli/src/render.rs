//! Presentation of a registry listing: the `ls` table, the `tree` forest,
//! the `--json` document and the frames of `tree --watch`.
//!
//! Pure functions of the listing (newest registration first, as
//! [`furrow::list_actors`] gives it), so they are tested without a running
//! system. Names are shown with control characters escaped: a name is
//! chosen by whoever started the actor and must not drive the terminal.

use furrow::{ActorInfo, ActorStats, Addr, Aid};
use std::collections::HashMap;
use std::fmt::Write as _;
// Columns are aligned by the width a terminal gives each character (a CJK
// character or an emoji takes two cells), not by their count.
use unicode_width::UnicodeWidthStr as _;

/// How much of each uuid to show.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum UuidWidth {
    /// The first 8 hex digits, as in furrow's log lines (`name[1a2b3c4d]`).
    Short,
    /// The whole uuid, hyphenated.
    Full,
}

/// The column titles of [`table`].
pub(crate) const COLUMNS: [&str; 7] = ["NAME", "UUID", "HOST", "PID", "PARENT", "REGISTRAR", "ADDRESSES"];

/// One line per actor, in the order given, under a header, columns
/// aligned: name, uuid, host (as the actor reports it; `-` from a peer
/// too old to say), pid, parent (`name[uuid8]`, `-` for a root),
/// `yes` for the registrar (`-` otherwise), and every address, comma
/// separated. Each line ends with a newline.
pub(crate) fn table(actors: &[ActorInfo], width: UuidWidth) -> String {
    let rows = actors.iter().map(|a| {
        [
            clean(&a.aid.name),
            uuid_text(&a.aid, width),
            host_text(&a.host),
            a.aid.pid.to_string(),
            a.parent.as_ref().map_or_else(|| "-".to_owned(), |p| label(p, UuidWidth::Short)),
            if a.registrar { "yes" } else { "-" }.to_owned(),
            addrs_text(&a.addrs),
        ]
    });
    let rows: Vec<[String; 7]> = std::iter::once(COLUMNS.map(str::to_owned)).chain(rows).collect();
    let mut widths = [0usize; 7];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.width());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            line.push_str(cell);
            if i + 1 < row.len() {
                line.push_str(&" ".repeat(w - cell.width() + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The actors as a forest: each actor under its parent, oldest
/// registration first among siblings. An actor whose parent is not in the
/// listing (a root, or a child whose parent is gone or unlisted) starts a
/// tree of its own. Each line is `name[uuid] pid=N`, then `(registrar)`
/// for the registrar, then the addresses; a top-level actor that has a
/// parent names it (`parent=name[uuid8]`). A child its parent's
/// supervisor has restarted `N` times (`restarts`, from
/// [`restart_counts`]) shows `↻N` after its name. An actor on another host
/// than the top of its tree shows `host=H` before its pid (a top-level
/// actor, when its host is not the first one's); hosts not said (a peer
/// too old to say) are never compared.
///
/// ```text
/// test-root[1a2b3c4d] pid=100 (registrar) uds:///run/furrow/test-root.sock
/// ├─ worker-a[5e6f7a8b] pid=101 uds:///run/furrow/worker-a.sock
/// │  └─ leaf[9c0d1e2f] ↻2 pid=103 uds:///run/furrow/leaf.sock
/// └─ worker-b[3a4b5c6d] host=gpu3 pid=102 tcp://10.0.0.3:7701
/// ```
pub(crate) fn tree(actors: &[ActorInfo], width: UuidWidth, restarts: &HashMap<uuid::Uuid, u32>) -> String {
    let mut out = String::new();
    let rows = forest(actors);
    let first_host = rows.first().map_or("", |(_, a)| a.host.as_str());
    let mut top_host = first_host;
    for (prefix, a) in rows {
        let reference = if prefix.is_empty() { first_host } else { top_host };
        if prefix.is_empty() {
            top_host = &a.host;
        }
        out.push_str(&prefix);
        out.push_str(&label(&a.aid, width));
        out.push_str(&restart_mark(restarts, &a.aid.uuid));
        if !a.host.is_empty() && !reference.is_empty() && a.host != reference {
            let _ = write!(out, " host={}", clean(&a.host));
        }
        let _ = write!(out, " pid={}", a.aid.pid);
        if a.registrar {
            out.push_str(" (registrar)");
            if !a.registry.is_empty() {
                let _ = write!(out, " registry={}", addrs_text(&a.registry));
            }
        }
        if prefix.is_empty()
            && let Some(p) = &a.parent
        {
            let _ = write!(out, " parent={}", label(p, UuidWidth::Short));
        }
        if !a.addrs.is_empty() {
            out.push(' ');
            out.push_str(&addrs_text(&a.addrs));
        }
        out.push('\n');
    }
    out
}

/// The forest [`tree`] draws, as rows in drawing order: the indentation
/// and connector (`""` for a top-level actor), and the actor.
fn forest(actors: &[ActorInfo]) -> Vec<(String, &ActorInfo)> {
    // The listing is newest first; a tree reads best in start order.
    let nodes: Vec<&ActorInfo> = actors.iter().rev().collect();
    let index: HashMap<uuid::Uuid, usize> = nodes.iter().enumerate().map(|(i, a)| (a.aid.uuid, i)).collect();
    let mut children = vec![Vec::new(); nodes.len()];
    let mut tops = Vec::new();
    for (i, a) in nodes.iter().enumerate() {
        match a.parent.as_ref().and_then(|p| index.get(&p.uuid)) {
            Some(&p) if p != i => children[p].push(i),
            _ => tops.push(i),
        }
    }
    let mut rows = Vec::new();
    let mut seen = vec![false; nodes.len()];
    // Every top-level actor, then whatever no top-level actor leads to
    // (only entries whose parents form a cycle, which a registry never
    // reports; shown rather than lost).
    let starts: Vec<usize> = tops.into_iter().chain(0..nodes.len()).collect();
    for start in starts {
        if seen[start] {
            continue;
        }
        // Depth first, without recursion: (node, indentation, connector).
        let mut stack = vec![(start, String::new(), "")];
        while let Some((i, indent, connector)) = stack.pop() {
            if seen[i] {
                continue;
            }
            seen[i] = true;
            rows.push((format!("{indent}{connector}"), nodes[i]));
            let below = match connector {
                "" => indent,
                "└─ " => indent + "   ",
                _ => indent + "│  ",
            };
            let kids: Vec<usize> = children[i].iter().copied().filter(|&c| !seen[c]).collect();
            for (k, &c) in kids.iter().enumerate().rev() {
                let connector = if k + 1 == kids.len() { "└─ " } else { "├─ " };
                stack.push((c, below.clone(), connector));
            }
        }
    }
    rows
}

/// What `furrow tree --watch` knows of one actor in one frame.
#[derive(Clone, Debug)]
pub(crate) enum Sample {
    /// Its stats answered.
    Live(ActorStats),
    /// Listed, but it did not answer (it ended between the listing and
    /// the query, or cannot be reached).
    Gone,
}

/// How many times each listed actor's supervisor restarted it, by the
/// actor's uuid, from its parent's stats (`stats`, by the parent's
/// uuid; `ActorStats::supervised` names each supervised child and counts
/// the instances started after its first). Children never restarted, and
/// those whose parent did not answer, are left out.
pub(crate) fn restart_counts(
    actors: &[ActorInfo],
    stats: &HashMap<uuid::Uuid, &ActorStats>,
) -> HashMap<uuid::Uuid, u32> {
    actors
        .iter()
        .filter_map(|a| {
            let parent = stats.get(&a.parent.as_ref()?.uuid)?;
            let n = parent.supervised.iter().find(|c| c.name == a.aid.name)?.restarts;
            (n > 0).then_some((a.aid.uuid, n))
        })
        .collect()
}

/// ` ↻N` for an actor restarted `N` times, else nothing.
fn restart_mark(restarts: &HashMap<uuid::Uuid, u32>, uuid: &uuid::Uuid) -> String {
    restarts.get(uuid).map(|n| format!(" ↻{n}")).unwrap_or_default()
}

/// The column titles of [`watch_frame`].
pub(crate) const WATCH_COLUMNS: [&str; 9] =
    ["ACTOR", "PID", "UPTIME", "CTX", "MSG/S IN", "MSG/S OUT", "BYTES/S IN", "BYTES/S OUT", "WAITING"];

/// One frame of `furrow tree --watch`: the tree of [`tree`] as the first
/// column, then per actor its pid, uptime, open contexts (both sides) and
/// message and byte rates in and out over every channel, computed from
/// `prev` (the previous frame's samples; `-` where there is none). Channels
/// to `observer` (the watching command itself) are left out of the rates:
/// they carry the watch's own queries. An actor that did not answer shows
/// `gone`. An actor one of whose dialogs has waited `stuck_after` or
/// longer (`ActorStats::longest_wait`) is marked in the last column with
/// that wait and a `!`: the one to dump. A child its parent's supervisor
/// restarted shows `↻N` after its name (`ActorStats::supervised`).
pub(crate) fn watch_frame(
    actors: &[ActorInfo],
    now: &HashMap<uuid::Uuid, Sample>,
    prev: &HashMap<uuid::Uuid, Sample>,
    observer: &Aid,
    width: UuidWidth,
    stuck_after: std::time::Duration,
) -> String {
    let stats: HashMap<uuid::Uuid, &ActorStats> = now
        .iter()
        .filter_map(|(u, s)| match s {
            Sample::Live(s) => Some((*u, s)),
            Sample::Gone => None,
        })
        .collect();
    let restarts = restart_counts(actors, &stats);
    let mut rows: Vec<Vec<String>> = vec![WATCH_COLUMNS.iter().map(|c| (*c).to_owned()).collect()];
    for (prefix, a) in forest(actors) {
        let restarts = restart_mark(&restarts, &a.aid.uuid);
        let mut row = vec![format!("{prefix}{}{restarts}", label(&a.aid, width)), a.aid.pid.to_string()];
        match now.get(&a.aid.uuid) {
            Some(Sample::Live(s)) => {
                row.push(duration_text(s.uptime));
                row.push(s.contexts().to_string());
                match prev.get(&a.aid.uuid) {
                    Some(Sample::Live(p)) => {
                        let r = rates(p, s, observer);
                        row.extend([count_rate(r[0]), count_rate(r[1]), byte_rate(r[2]), byte_rate(r[3])]);
                    }
                    _ => row.extend(std::iter::repeat_n("-".to_owned(), 4)),
                }
                let stuck = s.longest_wait >= stuck_after;
                row.push(if stuck { format!("{} !", duration_text(s.longest_wait)) } else { String::new() });
            }
            Some(Sample::Gone) | None => {
                row.push("gone".to_owned());
                row.extend(std::iter::repeat_n(String::new(), 6));
            }
        }
        rows.push(row);
    }
    let mut widths = [0usize; WATCH_COLUMNS.len()];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.width());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            // The tree column left-aligned, the figures right-aligned.
            let pad = w - cell.width();
            if i == 0 {
                let _ = write!(line, "{cell}{}", " ".repeat(pad));
            } else {
                let _ = write!(line, "  {}{cell}", " ".repeat(pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Messages in, messages out, bytes in, bytes out per second between two
/// samples of one actor, over the channels present in both (a channel is
/// matched by its id; one that opened or closed in between is left out)
/// and not to `observer`. The actor's own uptime is the clock.
fn rates(prev: &ActorStats, now: &ActorStats, observer: &Aid) -> [f64; 4] {
    let secs = now.uptime.saturating_sub(prev.uptime).as_secs_f64();
    if secs <= 0.0 {
        return [0.0; 4];
    }
    let mut sum = [0u64; 4];
    for c in now.channels.iter().filter(|c| c.peer.uuid != observer.uuid) {
        if let Some(p) = prev.channels.iter().find(|p| p.id == c.id) {
            let d = [
                c.msgs_in.saturating_sub(p.msgs_in),
                c.msgs_out.saturating_sub(p.msgs_out),
                c.bytes_in.saturating_sub(p.bytes_in),
                c.bytes_out.saturating_sub(p.bytes_out),
            ];
            for (s, d) in sum.iter_mut().zip(d) {
                *s += d;
            }
        }
    }
    sum.map(|n| n as f64 / secs)
}

/// `12`, `4.5k`, `1.2M` (per second).
fn count_rate(x: f64) -> String {
    scaled(x, 1000.0, ["", "k", "M", "G"])
}

/// `512B`, `4.5K`, `1.2M` (binary multiples, per second).
fn byte_rate(x: f64) -> String {
    scaled(x, 1024.0, ["B", "K", "M", "G"])
}

fn scaled(mut x: f64, step: f64, units: [&str; 4]) -> String {
    let mut unit = 0;
    while x >= step && unit + 1 < units.len() {
        x /= step;
        unit += 1;
    }
    if unit == 0 { format!("{}{}", x.round(), units[0]) } else { format!("{x:.1}{}", units[unit]) }
}

/// `4.2s`, `3m05s`, `2h07m`, `3d04h`.
fn duration_text(d: std::time::Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{:.1}s", d.as_secs_f64()),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

/// The listing as pretty-printed JSON (an array of `ActorInfo` objects,
/// as furrow serializes them), with a final newline.
pub(crate) fn json<T: serde::Serialize + ?Sized>(v: &T) -> serde_json::Result<String> {
    let mut s = serde_json::to_string_pretty(v)?;
    s.push('\n');
    Ok(s)
}

/// `name[uuid]`.
fn label(aid: &Aid, width: UuidWidth) -> String {
    format!("{}[{}]", clean(&aid.name), uuid_text(aid, width))
}

/// A host as a cell: `-` when not said.
fn host_text(host: &str) -> String {
    if host.is_empty() { "-".to_owned() } else { clean(host) }
}

fn uuid_text(aid: &Aid, width: UuidWidth) -> String {
    match width {
        UuidWidth::Short => {
            let mut s = aid.uuid.simple().to_string();
            s.truncate(8);
            s
        }
        UuidWidth::Full => aid.uuid.hyphenated().to_string(),
    }
}

/// Every address, comma separated (`-` for none).
fn addrs_text(addrs: &[Addr]) -> String {
    if addrs.is_empty() {
        return "-".to_owned();
    }
    let addrs: Vec<String> = addrs.iter().map(|a| clean(&a.to_string())).collect();
    addrs.join(",")
}

/// `s` with control characters (newlines, escape sequences) escaped.
fn clean(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An entry as the registry would give it (`ActorInfo` is
    /// non-exhaustive: built through its serialized form).
    fn info(name: &str, uuid: &str, pid: u32, parent: Option<(&str, &str, u32)>, registrar: bool) -> ActorInfo {
        on_host(name, uuid, pid, parent, registrar, "box1")
    }

    /// The same, on `host` (`""`: from a peer too old to say).
    fn on_host(
        name: &str,
        uuid: &str,
        pid: u32,
        parent: Option<(&str, &str, u32)>,
        registrar: bool,
        host: &str,
    ) -> ActorInfo {
        let parent = parent.map(|(n, u, p)| serde_json::json!({ "name": n, "uuid": u, "pid": p }));
        let mut v = serde_json::json!({
            "aid": { "name": name, "uuid": uuid, "pid": pid },
            "addrs": [format!("uds:///run/furrow/{name}.sock")],
            "parent": parent,
            "registrar": registrar,
        });
        if !host.is_empty() {
            v["host"] = host.into();
        }
        serde_json::from_value(v).unwrap()
    }

    const ROOT: &str = "1a2b3c4d-0000-4000-8000-000000000001";
    const A: &str = "5e6f7a8b-0000-4000-8000-000000000002";
    const B: &str = "3a4b5c6d-0000-4000-8000-000000000003";
    const LEAF: &str = "9c0d1e2f-0000-4000-8000-000000000004";

    /// A root with two children, a leaf under the first; newest first.
    fn system() -> Vec<ActorInfo> {
        vec![
            info("leaf", LEAF, 103, Some(("worker-a", A, 101)), false),
            info("worker-b", B, 102, Some(("test-root", ROOT, 100)), false),
            info("worker-a", A, 101, Some(("test-root", ROOT, 100)), false),
            info("test-root", ROOT, 100, None, true),
        ]
    }

    #[test]
    fn table_aligns_columns_and_marks_the_registrar() {
        let got = table(&system(), UuidWidth::Short);
        let want = "\
NAME       UUID      HOST  PID  PARENT               REGISTRAR  ADDRESSES
leaf       9c0d1e2f  box1  103  worker-a[5e6f7a8b]   -          uds:///run/furrow/leaf.sock
worker-b   3a4b5c6d  box1  102  test-root[1a2b3c4d]  -          uds:///run/furrow/worker-b.sock
worker-a   5e6f7a8b  box1  101  test-root[1a2b3c4d]  -          uds:///run/furrow/worker-a.sock
test-root  1a2b3c4d  box1  100  -                    yes        uds:///run/furrow/test-root.sock
";
        assert_eq!(got, want, "\n{got}");
    }

    #[test]
    fn table_full_uuids_and_several_addresses() {
        let mut one = info("multi", A, 7, None, false);
        one.addrs = vec!["tcp://10.0.0.1:7700".parse().unwrap(), "uds:///tmp/m.sock".parse().unwrap()];
        let got = table(&[one], UuidWidth::Full);
        let want = "\
NAME   UUID                                  HOST  PID  PARENT  REGISTRAR  ADDRESSES
multi  5e6f7a8b-0000-4000-8000-000000000002  box1  7    -       -          tcp://10.0.0.1:7700,uds:///tmp/m.sock
";
        assert_eq!(got, want, "\n{got}");
    }

    #[test]
    fn table_of_nothing_is_the_header() {
        assert_eq!(table(&[], UuidWidth::Short), "NAME  UUID  HOST  PID  PARENT  REGISTRAR  ADDRESSES\n");
    }

    #[test]
    fn hosts_are_a_column_and_shown_in_the_tree_where_they_differ() {
        // A child on another host (a wide name: aligned by terminal
        // width), one from a peer too old to say its host.
        let all = vec![
            on_host("old", LEAF, 103, Some(("worker-a", A, 101)), false, ""),
            on_host("far", B, 7, Some(("test-root", ROOT, 100)), false, "gpu3-計算"),
            info("worker-a", A, 101, Some(("test-root", ROOT, 100)), false),
            info("test-root", ROOT, 100, None, true),
        ];
        let got = table(&all, UuidWidth::Short);
        let want = "\
NAME       UUID      HOST       PID  PARENT               REGISTRAR  ADDRESSES
old        9c0d1e2f  -          103  worker-a[5e6f7a8b]   -          uds:///run/furrow/old.sock
far        3a4b5c6d  gpu3-計算  7    test-root[1a2b3c4d]  -          uds:///run/furrow/far.sock
worker-a   5e6f7a8b  box1       101  test-root[1a2b3c4d]  -          uds:///run/furrow/worker-a.sock
test-root  1a2b3c4d  box1       100  -                    yes        uds:///run/furrow/test-root.sock
";
        assert_eq!(got, want, "\n{got}");
        let got = tree(&all, UuidWidth::Short, &HashMap::new());
        let want = "\
test-root[1a2b3c4d] pid=100 (registrar) uds:///run/furrow/test-root.sock
├─ worker-a[5e6f7a8b] pid=101 uds:///run/furrow/worker-a.sock
│  └─ old[9c0d1e2f] pid=103 uds:///run/furrow/old.sock
└─ far[3a4b5c6d] host=gpu3-計算 pid=7 uds:///run/furrow/far.sock
";
        assert_eq!(got, want, "\n{got}");
        // A second tree, rooted elsewhere: its top says its host.
        let mut two = all.clone();
        two.insert(0, on_host("other-root", "00000000-0000-4000-8000-00000000000e", 5, None, false, "box2"));
        let got = tree(&two, UuidWidth::Short, &HashMap::new());
        assert!(got.lines().any(|l| l.starts_with("other-root[00000000] host=box2 pid=5")), "\n{got}");
    }

    #[test]
    fn tree_nests_children_under_their_parent_in_start_order() {
        let got = tree(&system(), UuidWidth::Short, &HashMap::new());
        let want = "\
test-root[1a2b3c4d] pid=100 (registrar) uds:///run/furrow/test-root.sock
├─ worker-a[5e6f7a8b] pid=101 uds:///run/furrow/worker-a.sock
│  └─ leaf[9c0d1e2f] pid=103 uds:///run/furrow/leaf.sock
└─ worker-b[3a4b5c6d] pid=102 uds:///run/furrow/worker-b.sock
";
        assert_eq!(got, want, "\n{got}");
    }

    #[test]
    fn tree_indents_below_a_last_child_with_spaces() {
        // root -> a -> (x, y); x -> z
        let x = "00000000-0000-4000-8000-00000000000a";
        let y = "00000000-0000-4000-8000-00000000000b";
        let z = "00000000-0000-4000-8000-00000000000c";
        let all = vec![
            info("z", z, 6, Some(("x", x, 4)), false),
            info("y", y, 5, Some(("a", A, 2)), false),
            info("x", x, 4, Some(("a", A, 2)), false),
            info("a", A, 2, Some(("root", ROOT, 1)), false),
            info("root", ROOT, 1, None, true),
        ];
        let got: Vec<String> = tree(&all, UuidWidth::Short, &HashMap::new())
            .lines()
            .map(|l| l.split(" pid=").next().unwrap().to_owned())
            .collect();
        assert_eq!(
            got,
            ["root[1a2b3c4d]", "└─ a[5e6f7a8b]", "   ├─ x[00000000]", "   │  └─ z[00000000]", "   └─ y[00000000]"],
        );
    }

    #[test]
    fn an_actor_whose_parent_is_not_listed_starts_its_own_tree() {
        // Its parent ended (or is unlisted) but it is still registered.
        let all = vec![info("orphan", LEAF, 9, Some(("gone", B, 8)), false), info("test-root", ROOT, 100, None, true)];
        let got = tree(&all, UuidWidth::Short, &HashMap::new());
        let want = "\
test-root[1a2b3c4d] pid=100 (registrar) uds:///run/furrow/test-root.sock
orphan[9c0d1e2f] pid=9 parent=gone[3a4b5c6d] uds:///run/furrow/orphan.sock
";
        assert_eq!(got, want, "\n{got}");
    }

    #[test]
    fn a_parent_cycle_is_shown_not_lost_or_looped() {
        let all = vec![info("p", A, 1, Some(("q", B, 2)), false), info("q", B, 2, Some(("p", A, 1)), false)];
        let got = tree(&all, UuidWidth::Short, &HashMap::new());
        assert_eq!(got.lines().count(), 2, "\n{got}");
        assert!(got.contains("p[5e6f7a8b]") && got.contains("q[3a4b5c6d]"), "\n{got}");
    }

    #[test]
    fn wide_characters_keep_the_columns_aligned() {
        // "数据库" is 3 characters and 6 terminal cells; "🦀ok" 3 and 4.
        let all =
            vec![info("数据库", A, 1, None, false), info("🦀ok", B, 2, None, false), info("db", LEAF, 3, None, false)];
        let t = table(&all, UuidWidth::Short);
        // The UUID column starts at the same cell on every line.
        let starts: Vec<usize> = t
            .lines()
            .map(|l| {
                let name_end = l.find("  ").unwrap();
                let rest = &l[name_end..];
                l[..name_end].width() + (rest.len() - rest.trim_start().len())
            })
            .collect();
        assert!(starts.windows(2).all(|w| w[0] == w[1]), "{starts:?}\n{t}");
        assert_eq!(starts[0], "数据库".width() + 2, "\n{t}");
    }

    #[test]
    fn control_characters_in_names_are_escaped() {
        let all = vec![info("evil\n\u{1b}[2J", A, 1, None, false)];
        let t = table(&all, UuidWidth::Short);
        assert_eq!(t.lines().count(), 2, "\n{t}");
        assert!(t.contains("evil\\n\\u{1b}[2J"), "\n{t}");
        assert_eq!(tree(&all, UuidWidth::Short, &HashMap::new()).lines().count(), 1);
    }

    #[test]
    fn json_round_trips() {
        let all = system();
        let back: Vec<ActorInfo> = serde_json::from_str(&json(&all).unwrap()).unwrap();
        assert_eq!(back, all);
    }

    /// Stats of `aid` after `secs` of uptime, with one channel (id 7) to
    /// a peer and one (id 8) to the observer, each carrying `n` of each.
    fn stats(aid: &Aid, secs: u64, n: u64, observer: &Aid) -> ActorStats {
        let mut s = ActorStats::default();
        s.aid = aid.clone();
        s.uptime = std::time::Duration::from_secs(secs);
        s.contexts_served = 2;
        for (id, peer) in [(7, Aid::new("peer", 9)), (8, observer.clone())] {
            let mut c = furrow::ChannelStats::default();
            (c.id, c.peer, c.msgs_in, c.msgs_out, c.bytes_in, c.bytes_out) = (id, peer, n, 2 * n, 100 * n, 2048 * n);
            s.channels.push(c);
        }
        s
    }

    #[test]
    fn watch_frame_shows_rates_from_two_samples_and_gone_actors() {
        let all = system();
        let observer = Aid::new("furrow-cli", 1);
        let aid = |name: &str| all.iter().find(|a| a.aid.name == name).unwrap().aid.clone();
        let root = aid("test-root");
        let prev: HashMap<uuid::Uuid, Sample> = [(root.uuid, Sample::Live(stats(&root, 60, 100, &observer)))].into();
        let now: HashMap<uuid::Uuid, Sample> = [
            (root.uuid, Sample::Live(stats(&root, 62, 300, &observer))),
            (aid("worker-a").uuid, {
                // One of its dialogs has waited 12 s: marked. It
                // supervises `leaf`, restarted twice.
                let mut s = stats(&aid("worker-a"), 3700, 5, &observer);
                let mut leaf = furrow::SupervisedStats::default();
                (leaf.name, leaf.restarts) = ("leaf".into(), 2);
                s.supervised.push(leaf);
                s.longest_wait = std::time::Duration::from_secs(12);
                Sample::Live(s)
            }),
            (aid("worker-b").uuid, Sample::Gone),
        ]
        .into();
        let got = watch_frame(&all, &now, &prev, &observer, UuidWidth::Short, std::time::Duration::from_secs(5));
        // Root: 200 more messages in over 2 s on the peer's channel (the
        // observer's is left out): 100/s in, 200/s out, 10 000 B/s in,
        // 200 KiB/s out. No earlier sample of worker-a: no rates yet.
        let want = "\
ACTOR                    PID  UPTIME  CTX  MSG/S IN  MSG/S OUT  BYTES/S IN  BYTES/S OUT  WAITING
test-root[1a2b3c4d]      100   1m02s    2       100        200        9.8K       200.0K
├─ worker-a[5e6f7a8b]    101   1h01m    2         -          -           -            -  12.0s !
│  └─ leaf[9c0d1e2f] ↻2  103    gone
└─ worker-b[3a4b5c6d]    102    gone
";
        assert_eq!(got, want, "\n{got}");
    }

    #[test]
    fn tree_marks_a_restarted_child_from_its_parents_stats() {
        let all = system();
        let observer = Aid::new("furrow-cli", 1);
        let aid = |name: &str| all.iter().find(|a| a.aid.name == name).unwrap().aid.clone();
        let mut parent = stats(&aid("worker-a"), 10, 1, &observer);
        for (name, n) in [("leaf", 3), ("worker-b", 7), ("never-restarted", 0)] {
            let mut c = furrow::SupervisedStats::default();
            (c.name, c.restarts) = (name.into(), n);
            parent.supervised.push(c);
        }
        let root = stats(&aid("test-root"), 10, 1, &observer);
        let by_parent: HashMap<uuid::Uuid, &ActorStats> =
            [(aid("worker-a").uuid, &parent), (aid("test-root").uuid, &root)].into();
        let counts = restart_counts(&all, &by_parent);
        // Only `leaf` is worker-a's: worker-b, a child of the root (whose
        // stats list no supervised child), is not marked by a namesake.
        assert_eq!(counts, [(aid("leaf").uuid, 3)].into());
        let got = tree(&all, UuidWidth::Short, &counts);
        assert!(got.contains("└─ leaf[9c0d1e2f] ↻3 pid=103"), "\n{got}");
        assert_eq!(got.matches('↻').count(), 1, "\n{got}");
    }

    #[test]
    fn figures_are_scaled() {
        assert_eq!(count_rate(0.0), "0");
        assert_eq!(count_rate(999.0), "999");
        assert_eq!(count_rate(1500.0), "1.5k");
        assert_eq!(byte_rate(512.0), "512B");
        assert_eq!(byte_rate(3.5 * 1024.0 * 1024.0), "3.5M");
        assert_eq!(duration_text(std::time::Duration::from_millis(4200)), "4.2s");
        assert_eq!(duration_text(std::time::Duration::from_secs(2 * 86400 + 3 * 3600)), "2d03h");
    }
}

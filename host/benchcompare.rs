//! `luahost bench compare`: luahost's workloads against their references,
//! interleaved in one run, as ratios against the goals of issue 12.
//!
//! Each round runs, one after the other: `call --conc 1`, `raw --conc 1`,
//! `call --conc 100`, `raw --conc 100`, and with `--skynet FILE` also
//! `local-call --conc 1`, `local-call --conc 100` and `send`. Each run's
//! RESULT line is printed as it ends; at the end, one line per pair:
//!
//! `RESULT workload=<w> conc=<n> ratio=<luahost/reference> luahost=<rate> reference=<rate> ref=<raw|skynet> goal=<g> met=<yes|no> rounds=<k>`
//!
//! `ratio` is the median of the per-round ratios (a round's two runs are
//! next to each other in time, so the machine's drift cancels); `luahost`
//! and `reference` are the medians of the rates. Skynet's figures come from
//! FILE (written by `examples/bench/vs-skynet.sh` in the same session): one
//! line per run, `workload=<call|send|local-call> [conc=<n>] rate=<r>`, or
//! skynet's own bench lines (`mode=ccall|csend|lcall conc=.. payload=..
//! rate=..`); lines with a payload other than 0 are ignored, several lines
//! of one workload give their median.

use std::path::Path;

use crate::bench::{run_once, BenchSpec, Workload};

/// What `bench compare` was asked to do.
pub struct CompareSpec {
    /// Measured seconds per run.
    pub secs: f64,
    /// Rounds.
    pub rounds: u32,
    /// Skynet's figures, if any.
    pub skynet: Option<std::path::PathBuf>,
}

/// The reference of a pair.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ref {
    /// `bench raw` at the same concurrency, measured in the same round.
    Raw,
    /// Skynet's figure from the file.
    Skynet,
}

struct Pair {
    workload: Workload,
    conc: u32,
    reference: Ref,
    /// The goal of issue 12 for luahost / reference, if it sets one.
    goal: Option<f64>,
    ratios: Vec<f64>,
    rates: Vec<f64>,
    refs: Vec<f64>,
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
}

/// Skynet's figures: (workload, conc) -> median rate.
fn read_skynet(path: &Path) -> Result<Vec<(String, u32, f64)>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut rows: Vec<(String, u32, Vec<f64>)> = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        let workload = match (field(line, "workload"), field(line, "mode")) {
            (Some(w), _) => w,
            (None, Some("ccall")) => "call",
            (None, Some("csend")) => "send",
            (None, Some("lcall")) => "local-call",
            _ => continue,
        };
        if field(line, "payload").is_some_and(|p| p != "0") {
            continue;
        }
        let conc: u32 = field(line, "conc").and_then(|c| c.parse().ok()).unwrap_or(1);
        let Some(rate) = field(line, "rate").and_then(|r| r.parse::<f64>().ok()) else {
            continue;
        };
        match rows.iter_mut().find(|r| r.0 == workload && r.1 == conc) {
            Some(r) => r.2.push(rate),
            None => rows.push((workload.to_string(), conc, vec![rate])),
        }
    }
    Ok(rows.into_iter().map(|(w, c, v)| (w, c, median(&v))).collect())
}

/// Runs the comparison and prints its lines.
///
/// # Errors
///
/// The first failed run's message, or an unreadable figures file.
pub fn run(spec: &CompareSpec) -> Result<(), String> {
    let skynet = match &spec.skynet {
        Some(p) => Some(read_skynet(p)?),
        None => None,
    };
    let pair = |workload, conc, reference, goal| Pair {
        workload,
        conc,
        reference,
        goal,
        ratios: Vec::new(),
        rates: Vec::new(),
        refs: Vec::new(),
    };
    let mut pairs = vec![
        pair(Workload::Call, 1, Ref::Raw, Some(0.9)),
        pair(Workload::Call, 100, Ref::Raw, Some(0.5)),
    ];
    if skynet.is_some() {
        pairs.extend([
            pair(Workload::LocalCall, 1, Ref::Skynet, Some(1.5)),
            pair(Workload::LocalCall, 100, Ref::Skynet, Some(10.0)),
            pair(Workload::Send, 1, Ref::Skynet, Some(20.0)),
            pair(Workload::Call, 1, Ref::Skynet, None),
            pair(Workload::Call, 100, Ref::Skynet, None),
        ]);
    }
    let skynet_rate = |w: Workload, conc: u32| {
        skynet
            .as_ref()
            .and_then(|rows| rows.iter().find(|r| r.0 == w.name() && r.1 == conc).map(|r| r.2))
    };
    let bench = |workload, conc| BenchSpec {
        workload,
        conc,
        payload: 0,
        secs: spec.secs,
        pin: None,
        threads: 1,
        spread: false,
        clients: 1,
        ws: false,
        router: false,
    };
    for round in 1..=spec.rounds.max(1) {
        println!("ROUND {round}");
        // luahost's rate of each workload this round, measured once even
        // when two pairs use it (call against raw and against skynet)
        let mut measured: Vec<(Workload, u32, f64)> = Vec::new();
        for p in pairs.iter_mut() {
            let rate = match measured.iter().find(|m| m.0 == p.workload && m.1 == p.conc) {
                Some(m) => m.2,
                None => {
                    let s = bench(p.workload, p.conc);
                    let r = run_once(&s)?;
                    println!("{}", r.line(&s));
                    measured.push((p.workload, p.conc, r.rate));
                    r.rate
                }
            };
            let reference = match p.reference {
                Ref::Raw => {
                    let s = bench(Workload::Raw, p.conc);
                    let r = run_once(&s)?;
                    println!("{}", r.line(&s));
                    Some(r.rate)
                }
                Ref::Skynet => skynet_rate(p.workload, p.conc),
            };
            p.rates.push(rate);
            if let Some(reference) = reference.filter(|r| *r > 0.0) {
                p.refs.push(reference);
                p.ratios.push(rate / reference);
            }
        }
    }
    for p in &pairs {
        let head = format!("RESULT workload={} conc={}", p.workload.name(), p.conc);
        let ref_name = if p.reference == Ref::Raw { "raw" } else { "skynet" };
        if p.ratios.is_empty() {
            println!(
                "{head} ratio=- luahost={:.0} reference=- ref={ref_name} goal={} met=- note=no-reference-figure",
                median(&p.rates),
                p.goal.map(|g| g.to_string()).unwrap_or("none".into())
            );
            continue;
        }
        // judged as printed (two decimals), so the line never contradicts itself
        let ratio = (median(&p.ratios) * 100.0).round() / 100.0;
        let (goal, met) = match p.goal {
            Some(g) => (g.to_string(), if ratio >= g { "yes" } else { "no" }),
            None => ("none".to_string(), "-"),
        };
        println!(
            "{head} ratio={ratio:.2} luahost={:.0} reference={:.0} ref={ref_name} goal={goal} met={met} rounds={}",
            median(&p.rates),
            median(&p.refs),
            p.ratios.len()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skynet_figures_take_both_forms_and_skip_payloads() {
        let dir = std::env::temp_dir().join(format!("luahost-skynet-figures-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("f.txt");
        std::fs::write(
            &f,
            "# comment\nworkload=send rate=100\nworkload=send conc=1 rate=300\nworkload=send rate=200\n\
             threads=2 port=27001 RESULT mode=ccall conc=100 payload=0 n=5 rate=19000 p50_us=1\n\
             RESULT mode=ccall conc=100 payload=65536 rate=3000\nmode=lcall conc=1 payload=0 rate=120000\nno rate here\n",
        )
        .unwrap();
        let rows = read_skynet(&f).unwrap();
        let get = |w: &str, c: u32| rows.iter().find(|r| r.0 == w && r.1 == c).map(|r| r.2);
        assert_eq!(get("send", 1), Some(200.0));
        assert_eq!(get("call", 100), Some(19000.0));
        assert_eq!(get("local-call", 1), Some(120000.0));
        assert_eq!(rows.len(), 3);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

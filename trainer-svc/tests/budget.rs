//! The training budget (`--max-training-rows`): the database selects the
//! same learners as the rule applied in memory, reads their whole histories
//! in the scan's order on both backends, and a budgeted service still
//! triggers on every new row and advances its watermark.

mod support;

use std::collections::BTreeMap;

use taskcast_contract::TaskRow;
use taskcast_learn::budget;
use taskcast_learn::source::LearnerSource;
use trainer_svc::data::source::DbSource;
use trainer_svc::db::{Db, RunState, RunTrigger};

use support::*;

/// Each learner's `(rows, latest completed_at)`, for comparing selections.
fn learners(rows: &[TaskRow]) -> BTreeMap<String, (u64, i64)> {
    let mut out: BTreeMap<String, (u64, i64)> = BTreeMap::new();
    for r in rows {
        let e = out.entry(r.user_id.clone()).or_insert((0, i64::MIN));
        e.0 += 1;
        e.1 = e.1.max(r.completed_at_ms);
    }
    out
}

/// Every row the source yields, pass by pass, checking that each learner
/// comes once and whole, in time order.
async fn read_all(source: &mut DbSource) -> Vec<TaskRow> {
    let mut out: Vec<TaskRow> = Vec::new();
    source
        .for_each_learner(&mut |rows| {
            assert!(
                out.last().is_none_or(|r| r.user_id < rows[0].user_id),
                "learners in order, each once"
            );
            assert!(rows.iter().all(|r| r.user_id == rows[0].user_id));
            assert!(rows.is_sorted_by_key(|r| r.completed_at_ms));
            out.extend_from_slice(rows);
        })
        .await
        .expect("read");
    out
}

/// Rows of several learners, two of whom finish at the same instant (the
/// tie goes to the higher id), with distinct times otherwise.
fn rows() -> Vec<TaskRow> {
    let mut rows = simulator(30, 20, 5).generate();
    let last = rows.iter().map(|r| r.completed_at_ms).max().unwrap_or(0);
    for (user, n) in [("tie-a", 7), ("tie-b", 4)] {
        for i in 0..n {
            let mut r = rows[0].clone();
            r.user_id = user.into();
            r.completed_at_ms = last + 1_000 - (n - 1 - i) * 10;
            rows.push(r);
        }
    }
    rows
}

#[tokio::test]
async fn the_database_selects_what_the_rule_selects() {
    on_each_backend(async |url, backend| {
        let rows = rows();
        let db = Db::connect(url).await.expect("connect");
        db.insert_tasks(&rows).await.expect("insert");
        let up_to = db.max_task_id().await.expect("max id");
        let total = rows.len() as u64;
        let all = learners(&rows);
        let by_learner: Vec<(&str, i64, u64)> = all
            .iter()
            .map(|(u, (n, last))| (u.as_str(), *last, *n))
            .collect();

        for max_rows in [1, 4, 11, 12, 100, total / 3, total / 2, total - 1] {
            let want = budget::cut(by_learner.iter().copied(), max_rows);
            let got = db.training_cut(max_rows, up_to).await.expect("cut");
            assert_eq!(got, want, "{backend}, budget {max_rows}");
            let expected = learners(&budget::select_recent(rows.clone(), max_rows));
            let taken: u64 = expected.values().map(|(n, _)| n).sum();
            assert!(taken >= max_rows.min(total), "{backend}: budget reached");
            let largest = all.values().map(|(n, _)| *n).max().unwrap_or(0);
            assert!(
                taken < max_rows + largest,
                "{backend}: at most one learner over"
            );

            // Through the source, both passes, as a run reads.
            let mut source = DbSource::new(db.clone(), up_to).with_budget(max_rows);
            let first = read_all(&mut source).await;
            let second = read_all(&mut source).await;
            assert_eq!(first, second, "{backend}: both passes read the same rows");
            assert_eq!(learners(&first), expected, "{backend}, budget {max_rows}");

            // Small pages: ranges of several learners, and learners longer
            // than a page read in keyset pages.
            if let Some(cut) = &want {
                for page in [1, 3, 7, 50] {
                    let mut pager = db.scan_selected(page, up_to, cut).expect("pager");
                    let mut got: Vec<TaskRow> = Vec::new();
                    while let Some(p) = pager.next_page().await.expect("page") {
                        assert!(!p.is_empty() && p.len() as u64 <= page);
                        got.extend(p.into_iter().map(|(_, r)| r));
                    }
                    assert_eq!(got, first, "{backend}, budget {max_rows}, page {page}");
                }
            }
        }
        // The tie: four rows of tie-b (the higher id) come first.
        let cut = db.training_cut(4, up_to).await.expect("cut");
        assert_eq!(cut.map(|c| c.user_id).as_deref(), Some("tie-b"));
        let cut = db.training_cut(5, up_to).await.expect("cut");
        assert_eq!(cut.map(|c| c.user_id).as_deref(), Some("tie-a"));

        // No budget, or one the table fits in: no cut, every row.
        assert_eq!(db.training_cut(0, up_to).await.expect("cut"), None);
        assert_eq!(db.training_cut(total, up_to).await.expect("cut"), None);
        let mut source = DbSource::new(db.clone(), up_to).with_budget(total);
        assert_eq!(read_all(&mut source).await.len() as u64, total);

        // Rows above up_to_id count neither toward the budget nor the cut.
        let mut late = rows[0].clone();
        late.user_id = "late-learner".into();
        late.completed_at_ms += 10_000_000;
        db.insert_tasks(&[late]).await.expect("insert");
        assert_eq!(
            db.training_cut(4, up_to)
                .await
                .expect("cut")
                .map(|c| c.user_id),
            Some("tie-b".into())
        );
        db.close().await.expect("close");
    })
    .await;
}

/// A budgeted service trains on the most recent learners, and the trigger
/// still counts every new row and the watermark still reaches the last one.
#[tokio::test]
async fn a_budgeted_service_still_triggers_and_advances_its_watermark() {
    on_each_backend(async |url, _backend| {
        let mut sim = simulator(60, 40, 3);
        let rows = sim.generate();
        let db = Db::connect(url).await.expect("connect");
        db.insert_tasks(&rows).await.expect("insert");
        let max_rows = rows.len() as u64 / 2;
        let mut c = config(url, 30);
        c.max_training_rows = max_rows;
        let server = Server::start(c).await;

        let startup = trigger_run_end(&db, RunTrigger::Startup, "the startup run").await;
        assert_eq!(startup.state, RunState::Succeeded, "{startup:?}");
        let want: u64 = learners(&budget::select_recent(rows.clone(), max_rows))
            .values()
            .map(|(n, _)| n)
            .sum();
        assert_eq!(startup.rows_used, want);
        assert!(startup.rows_used < rows.len() as u64);

        wait_watermark(&db).await;

        // New rows, spread over every learner, taken by the budget or not:
        // the trigger counts them all.
        db.insert_tasks(&more_rows(&mut sim, 30))
            .await
            .expect("insert");
        let auto = trigger_run_end(&db, RunTrigger::Auto, "an automatic run").await;
        assert_ne!(auto.state, RunState::Failed, "{auto:?}");
        assert!(auto.rows_used <= max_rows + 200, "{}", auto.rows_used);
        wait_watermark(&db).await;
        server.stop().await;
        db.close().await.expect("close");
    })
    .await;
}

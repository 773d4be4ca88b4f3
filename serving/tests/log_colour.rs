//! Text logs written to a file or a pipe carry no ANSI colour codes: the
//! test runs itself again as a child whose stdout is a pipe (as
//! scripts/run.sh's `.run/*.log` redirections are), has it log through
//! `init_tracing`, and reads what it wrote.

use std::process::Command;

use taskcast_serving::logging::{LogFormat, init_tracing};

const CHILD: &str = "TASKCAST_LOG_COLOUR_CHILD";

#[test]
fn text_logs_to_a_pipe_have_no_colour_codes() {
    if std::env::var_os(CHILD).is_some() {
        // The child: log a warning (levels are coloured on a terminal) and stop.
        init_tracing(LogFormat::Text, "info");
        tracing::warn!(field = 1, "a line for the log file");
        return;
    }
    let me = std::env::current_exe().expect("test binary");
    let out = Command::new(me)
        .args([
            "--exact",
            "text_logs_to_a_pipe_have_no_colour_codes",
            "--nocapture",
        ])
        .env(CHILD, "1")
        .env_remove("NO_COLOR")
        .env_remove("TASKCAST_LOG")
        .env_remove("RUST_LOG")
        .output()
        .expect("run the child");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("a line for the log file"), "{text}");
    assert!(
        !text.contains('\u{1b}'),
        "colour codes in a piped log: {text:?}"
    );
}

//! `taskcast-load` binary: flags, a runtime sized by `--threads`, one run,
//! the table or JSON on stdout.

use anyhow::Context;
use clap::Parser;
use taskcast_load::{Args, null_server, run};

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    args.validate()?;
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if args.threads > 0 {
        builder.worker_threads(args.threads);
    }
    let rt = builder
        .enable_all()
        .build()
        .context("building the runtime")?;

    if let Some(addr) = args.serve_null {
        return rt.block_on(async {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding {addr}"))?;
            eprintln!(
                "null Inference server on {}; Ctrl-C to stop",
                listener.local_addr()?
            );
            null_server::serve(listener, async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await
            .context("null server")
        });
    }

    // The self-test server gets its own single-threaded runtime on its own
    // thread, so it behaves like a separate one-core server process.
    // Held to the end of `main`: dropping the sender stops the null server.
    let null = if args.self_test {
        Some(start_null_server()?)
    } else {
        None
    };
    let target = match (&null, &args.target) {
        (Some((url, _)), _) => url.clone(),
        (None, Some(t)) => t.clone(),
        (None, None) => anyhow::bail!("--target URL is required"),
    };
    let report = rt.block_on(run(&args, &target))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    Ok(())
}

/// Starts the null server on 127.0.0.1:0 in a thread of its own; returns its
/// URL and the sender that stops it when dropped.
fn start_null_server() -> anyhow::Result<(String, tokio::sync::oneshot::Sender<()>)> {
    let std_listener =
        std::net::TcpListener::bind("127.0.0.1:0").context("binding the null server")?;
    std_listener.set_nonblocking(true)?;
    let url = format!("http://{}", std_listener.local_addr()?);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("null server runtime")?;
    std::thread::Builder::new()
        .name("null-server".into())
        .spawn(move || {
            rt.block_on(async move {
                match tokio::net::TcpListener::from_std(std_listener) {
                    Ok(listener) => {
                        if let Err(e) = null_server::serve(listener, async {
                            let _ = rx.await;
                        })
                        .await
                        {
                            eprintln!("null server failed: {e}");
                        }
                    }
                    Err(e) => eprintln!("null server listener: {e}"),
                }
            });
        })
        .context("starting the null server thread")?;
    Ok((url, tx))
}

//! When to stop: the operating system's signal ([`shutdown_signal`]), and
//! one signal every task of a server watches ([`Shutdown`]), so the server
//! stops its background work, its streams and its listeners together.

use tokio::sync::watch;

/// Resolves on SIGTERM (how orchestrators stop a pod) or Ctrl-C (a developer).
///
/// If a signal handler cannot be installed the corresponding branch simply
/// never fires, so the process still stops on the other one.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("Ctrl-C received, shutting down"),
        () = term => tracing::info!("SIGTERM received, shutting down"),
    }
}

/// Starts an orderly stop: every [`Shutdown`] subscribed from it sees the
/// signal, including ones subscribed after it was sent. Dropping the sender
/// counts as sending, so a server that returns early never leaves a task
/// waiting for a signal that cannot come.
#[derive(Debug)]
pub struct ShutdownSender(watch::Sender<bool>);

/// Listens for the shutdown signal, in the style of mini-redis'
/// `shutdown.rs`: each task that must stop holds one (they are cheap to
/// clone) and selects on [`Shutdown::recv`] beside its work.
#[derive(Clone, Debug)]
pub struct Shutdown(watch::Receiver<bool>);

/// A sender and a first listener.
pub fn channel() -> (ShutdownSender, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (ShutdownSender(tx), Shutdown(rx))
}

impl ShutdownSender {
    /// Tells every listener to stop; sending again does nothing.
    pub fn send(&self) {
        self.0.send_replace(true);
    }

    /// Another listener.
    pub fn subscribe(&self) -> Shutdown {
        Shutdown(self.0.subscribe())
    }
}

impl Shutdown {
    /// Whether the signal has been sent (or the sender dropped).
    pub fn is_shutdown(&self) -> bool {
        *self.0.borrow() || self.0.has_changed().is_err()
    }

    /// Resolves once the signal is sent (or the sender dropped); at once if
    /// that has already happened.
    pub async fn recv(&mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }

    /// [`Shutdown::recv`] as an owned future, for APIs that take one (a
    /// server's graceful-shutdown signal, a stream's `take_until`).
    pub async fn wait(mut self) {
        self.recv().await;
    }

    /// Runs `step` now and then every `every` until the signal, waiting
    /// `every` after each step ends (a slow step never piles up). A step's
    /// own errors are its business: it logs them and the loop goes on.
    pub async fn every<F, Fut>(mut self, every: std::time::Duration, mut step: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        loop {
            step().await;
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                () = self.recv() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn every_listener_sees_the_signal_once_sent() {
        let (tx, mut early) = channel();
        assert!(!early.is_shutdown());
        let waiting = tokio::spawn(async move { early.recv().await });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!waiting.is_finished());
        tx.send();
        waiting.await.unwrap();
        let late = tx.subscribe();
        assert!(late.is_shutdown());
        tokio::time::timeout(Duration::from_secs(1), late.wait())
            .await
            .expect("a listener subscribed after the signal sees it at once");
    }

    #[tokio::test]
    async fn dropping_the_sender_counts_as_the_signal() {
        let (tx, mut rx) = channel();
        drop(tx);
        assert!(rx.is_shutdown());
        tokio::time::timeout(Duration::from_secs(1), rx.recv())
            .await
            .unwrap();
    }
}

//! Graceful shutdown: SIGINT/SIGTERM (or a programmatic trigger) flips a watch channel that every
//! listener waits on; listeners stop accepting and drain in-flight requests.

use tokio::sync::watch;

/// The trigger side, held by whoever may stop the server.
#[derive(Clone)]
pub struct Trigger(watch::Sender<bool>);

/// The waiting side, one per listener.
#[derive(Clone)]
pub struct Signal(watch::Receiver<bool>);

pub fn channel() -> (Trigger, Signal) {
    let (tx, rx) = watch::channel(false);
    (Trigger(tx), Signal(rx))
}

impl Trigger {
    pub fn trigger(&self) {
        let _ = self.0.send(true);
    }
}

impl Signal {
    /// Resolves once shutdown has been triggered (at once if it already was).
    pub async fn wait(mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}

impl Signal {
    /// Runs `tick` every `period` until shutdown (the first run one period from now).
    pub async fn every<F: std::future::Future<Output = ()>>(
        self,
        period: std::time::Duration,
        mut tick: impl FnMut() -> F,
    ) {
        let stopped = self.wait();
        tokio::pin!(stopped);
        loop {
            tokio::select! {
                () = &mut stopped => return,
                () = tokio::time::sleep(period) => tick().await,
            }
        }
    }
}

/// Resolves on the first SIGINT or SIGTERM.
pub async fn os_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received, shutting down"),
        () = term => tracing::info!("SIGTERM received, shutting down"),
    }
}

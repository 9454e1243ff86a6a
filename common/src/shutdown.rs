//! A signal that tells background work (delivery workers, sweepers) to finish and stop.

use tokio::sync::watch;

/// Cloneable; every clone sees the same trigger.
#[derive(Clone, Debug)]
pub struct Shutdown {
    sender: std::sync::Arc<watch::Sender<bool>>,
    receiver: watch::Receiver<bool>,
}

impl Default for Shutdown {
    fn default() -> Self {
        let (sender, receiver) = watch::channel(false);
        Self {
            sender: std::sync::Arc::new(sender),
            receiver,
        }
    }
}

impl Shutdown {
    pub fn trigger(&self) {
        let _ = self.sender.send(true);
    }

    pub fn is_triggered(&self) -> bool {
        *self.receiver.borrow()
    }

    /// Resolves once [`Shutdown::trigger`] has been called.
    pub async fn wait(&self) {
        let mut receiver = self.receiver.clone();
        let _ = receiver.wait_for(|stopped| *stopped).await;
    }

    /// Triggers on SIGINT or SIGTERM. The handlers are installed before this returns, so a signal that
    /// arrives at any later moment (during migrations or start-up included) stops the process gracefully
    /// instead of killing it.
    pub fn on_signals(&self) {
        let this = self.clone();
        let signals = Signals::install();
        tokio::spawn(async move {
            let name = signals.wait().await;
            tracing::info!(signal = name, "signal received; stopping");
            this.trigger();
        });
    }
}

/// SIGINT and SIGTERM handlers, installed on creation.
struct Signals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    int: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn install() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Self {
                term: signal(SignalKind::terminate()).ok(),
                int: signal(SignalKind::interrupt()).ok(),
            }
        }
        #[cfg(not(unix))]
        Self {}
    }

    /// Waits for the first signal and names it.
    async fn wait(self) -> &'static str {
        #[cfg(unix)]
        {
            async fn next(signal: Option<tokio::signal::unix::Signal>) {
                match signal {
                    Some(mut signal) => {
                        signal.recv().await;
                    }
                    None => std::future::pending().await,
                }
            }
            tokio::select! {
                _ = next(self.term) => "SIGTERM",
                _ = next(self.int) => "SIGINT",
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            "ctrl-c"
        }
    }
}

//! The servers' log, shown with a failing test: written through libtest's capture (threads the
//! test starts inherit it), so a passing test prints nothing and a failing one shows what its
//! server said. `RUST_LOG` overrides the level.

pub fn init() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| "info,sqlx=warn,keygate_auth::feed=debug".into());
        let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
    });
}

//! Where config values named by an environment variable (secrets, `${env:NAME}` templates)
//! come from. Serving reads the process's environment; `portico check --skip-env` reads a
//! placeholder for every variable, so a CI job can check a config without its secrets.

/// The source of environment variables for one config compile.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Env {
    /// The process's environment.
    #[default]
    Process,
    /// Every variable is set, to [`Env::PLACEHOLDER`]: names and their use are checked,
    /// values are not.
    Placeholders,
}

impl Env {
    /// Long enough for every secret check (JWT HMAC keys need 32 bytes), and not a value any
    /// check refuses.
    pub const PLACEHOLDER: &'static str = "portico-check-placeholder-not-a-secret-0123456789";

    /// The variable's value; `None` when it is not set (or not valid Unicode).
    pub fn var(self, name: &str) -> Option<String> {
        match self {
            Env::Process => std::env::var(name).ok(),
            Env::Placeholders => Some(Self::PLACEHOLDER.to_string()),
        }
    }
}

use clap::CommandFactory;
use clap_complete::Shell;
use quackfs::error::Result;

/// Print a shell completion script (bash, zsh, fish, elvish, powershell).
///
/// Example: `quackfs completions bash > /etc/bash_completion.d/quackfs`
#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// The shell to generate completions for
    pub shell: Shell,
}

pub fn run(a: &CompletionsArgs) -> Result<()> {
    let mut cmd = super::Cli::command();
    clap_complete::generate(a.shell, &mut cmd, "quackfs", &mut std::io::stdout());
    Ok(())
}

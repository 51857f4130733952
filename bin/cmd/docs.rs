//! `loopkit completions SHELL` and `loopkit man --out DIR`: generated from the clap definitions
//! (`clap_complete`, `clap_mangen`), so they never drift from the real flags.

use crate::cli::{Cli, CompletionsArgs, ManArgs, Shell};
use clap::CommandFactory;

/// Print the completion script on stdout.
pub fn completions(a: &CompletionsArgs) -> loopkit::Result<u8> {
    let mut cmd = Cli::command();
    let mut buf = Vec::new();
    match a.shell {
        Shell::Bash => clap_complete::generate(clap_complete::shells::Bash, &mut cmd, "loopkit", &mut buf),
        Shell::Zsh => clap_complete::generate(clap_complete::shells::Zsh, &mut cmd, "loopkit", &mut buf),
        Shell::Fish => clap_complete::generate(clap_complete::shells::Fish, &mut cmd, "loopkit", &mut buf),
    }
    super::print_exact(&String::from_utf8_lossy(&buf))?;
    Ok(0)
}

/// Write `loopkit.1` and one `loopkit-SUBCOMMAND.1` per subcommand into the directory.
pub fn man(a: &ManArgs) -> loopkit::Result<u8> {
    std::fs::create_dir_all(&a.out).map_err(|e| loopkit::Error::io(format!("cannot create {}", a.out.display()), e))?;
    let cmd = Cli::command().version(crate::cli::version());
    let mut written = Vec::new();
    let mut page = |c: clap::Command, name: String| -> loopkit::Result<()> {
        let mut buf = Vec::new();
        clap_mangen::Man::new(c.name(&*name.clone().leak()))
            .render(&mut buf)
            .map_err(|e| loopkit::Error::io(format!("cannot render the man page {name}"), e))?;
        let path = a.out.join(format!("{name}.1"));
        std::fs::write(&path, &buf).map_err(|e| loopkit::Error::io(format!("cannot write {}", path.display()), e))?;
        written.push(path);
        Ok(())
    };
    for sub in cmd.get_subcommands() {
        let name = format!("loopkit-{}", sub.get_name());
        page(sub.clone().version(crate::cli::version()), name)?;
    }
    page(cmd.clone(), "loopkit".into())?;
    for p in written {
        println!("{}", p.display());
    }
    Ok(0)
}

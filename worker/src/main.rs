use anyhow::Context;
use clap::Parser;
use std::process::ExitCode;
use webmon_worker::config::{self, Cli, Command};
use webmon_worker::{commands, demo_target, run, runtime};

fn main() -> ExitCode {
    // .env.<ENV> first, so its values become defaults that real variables and flags override.
    let env_file = config::load_env_file();
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only on a terminal: a log file or journal gets no escape codes.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stdout())
        && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(colour)
        .init();
    match env_file {
        Ok(Some(path)) => tracing::debug!(path = %path.display(), "loaded environment file"),
        Ok(None) => {}
        Err(e) => {
            eprintln!("webmon-worker: bad environment file: {e}");
            return ExitCode::from(2);
        }
    }
    let runtime = match runtime::build(cli.threads) {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("webmon-worker: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("webmon-worker: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => run::run(&cli.database, &cli.run)
            .await
            .context("probe failed"),
        Command::Import { file } => {
            let (entries, inserted) = commands::import(&cli.database, file.as_deref())
                .await
                .context("import failed")?;
            println!(
                "imported {entries} entries: {inserted} new monitors, {} already present (updated)",
                entries as i64 - inserted
            );
            Ok(())
        }
        Command::Status { watch } => {
            let client =
                webmon_worker::db::connect(&webmon_worker::db::config(&cli.database)?, None)
                    .await?;
            loop {
                let table = commands::status_table(&client).await?;
                if watch == 0 {
                    print!("{table}");
                    return Ok(());
                }
                // Clear the screen and redraw, like `watch`.
                print!("\x1b[2J\x1b[H{table}\n(refreshing every {watch}s; Ctrl-C to stop)\n");
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => return Ok(()),
                    _ = tokio::time::sleep(std::time::Duration::from_secs(watch)) => {}
                }
            }
        }
        Command::DemoTarget { listen } => demo_target::serve(&listen)
            .await
            .context("demo target failed"),
    }
}

import { processIo } from "./cli-io.js";
import { runCli } from "./run-cli.js";

// The process entry point (bin/keybroker.js): everything else is in run-cli.ts, callable in-process.
process.exitCode = await runCli(process.argv.slice(2), processIo());

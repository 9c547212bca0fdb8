import { afterAll } from "vitest";
import { describeLeaks, installOutputCapture, structuralLeaks, suiteCanaries } from "./leak-sweep.js";

/**
 * Suite-wide half of the canary sweep (catalogue E50), loaded by vitest.config.ts `setupFiles`
 * into every test file: everything the file's process writes to stdout/stderr — console, pino's
 * default destination, grpc-js's own logger, anything — is teed, and when the file ends it must
 * hold no registered canary (any form), no JWT, no caller key with a valid checksum and none of
 * the suite's `canary` markers. The broker's own log lines go to captured loggers that each
 * suite scans itself; test/catalogue/leak-sweep.e2e.test.ts scans logs, metrics, errors and
 * every table of one broker driven through every kind of call.
 */
const capture = installOutputCapture();

afterAll(() => {
  const text = capture.text();
  capture.uninstall();
  const hits = [
    ...suiteCanaries.scan("this test file's stdout/stderr", text),
    ...structuralLeaks("this test file's stdout/stderr", text),
  ];
  if (hits.length > 0) {
    throw new Error(`E50 leak sweep: ${describeLeaks(hits)}`);
  }
});

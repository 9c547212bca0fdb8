import type { Migration } from "kysely";
import * as m0001 from "./0001_initial.js";
import * as m0002 from "./0002_audit.js";
import * as m0003 from "./0003_caller_key_client_cert.js";
import * as m0004 from "./0004_secret_head.js";
import * as m0005 from "./0005_outbound_nonces.js";
import * as m0006 from "./0006_audit_checkpoints.js";
import * as m0007 from "./0007_secret_grants.js";
import * as m0008 from "./0008_secret_inspection.js";
import * as m0009 from "./0009_rate_limit_leases.js";
import * as m0010 from "./0010_misuse_signals.js";
import * as m0011 from "./0011_session_revocations.js";
import * as m0012 from "./0012_dpop_proof_ids.js";
import * as m0013 from "./0013_user_pins.js";
import * as m0014 from "./0014_oauth_connections.js";

/**
 * Every migration, by name, in order. Imported statically (not read from the directory)
 * so the same list works under tsx, vitest and compiled output.
 */
export const migrations: Record<string, Migration> = {
  "0001_initial": m0001,
  "0002_audit": m0002,
  "0003_caller_key_client_cert": m0003,
  "0004_secret_head": m0004,
  "0005_outbound_nonces": m0005,
  "0006_audit_checkpoints": m0006,
  "0007_secret_grants": m0007,
  "0008_secret_inspection": m0008,
  "0009_rate_limit_leases": m0009,
  "0010_misuse_signals": m0010,
  "0011_session_revocations": m0011,
  "0012_dpop_proof_ids": m0012,
  "0013_user_pins": m0013,
  "0014_oauth_connections": m0014,
};

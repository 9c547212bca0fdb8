import { ConfigError, loadConfig } from "../../src/config/config.js";

/** A complete production environment: each config test changes only what it is about. */
export const PRODUCTION_ENV = {
  DATABASE_URL: "postgres://keybroker@db.internal:5432/keybroker",
  KEYBROKER_KEYRING: "aws-kms",
  KEYBROKER_KMS_KEY_ID: "alias/keybroker",
  AWS_REGION: "eu-west-1",
  AUTH0_ISSUER: "https://tenant.eu.auth0.com/",
  AUTH0_AUDIENCE: "https://keybroker.example.com/api",
  AUTH0_REQUIRED_PERMISSION: "keybroker:use",
};

/** The problems loadConfig lists for `env`; fails the test if it accepts the environment. */
export function configProblemsOf(env: Record<string, string>): string[] {
  try {
    loadConfig(env);
  } catch (err) {
    if (err instanceof ConfigError) return [...err.problems];
    throw err;
  }
  throw new Error("expected a ConfigError");
}

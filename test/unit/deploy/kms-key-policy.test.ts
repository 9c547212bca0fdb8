import { describe, expect, it } from "vitest";
import { oauthAppContext, oauthPkceVerifierContext } from "../../../src/keys/oauth-app-context.js";
import { PEPPER_CONTEXT } from "../../../src/keys/pepper.js";
import { userKeyContext } from "../../../src/keys/user-data-keys.js";
import { readRepoFile } from "./deploy-files.js";

interface Statement {
  readonly Sid: string;
  readonly Effect: "Allow" | "Deny";
  readonly Principal: { readonly AWS: string };
  readonly Action: string | string[];
  readonly Condition?: Record<string, Record<string, string | string[]>>;
}

const policy = JSON.parse(readRepoFile("deploy/kms-key-policy.json")) as { Statement: Statement[] };
const BROKER_ROLE = "arn:aws:iam::111122223333:role/keybroker-broker";

// Every operation that turns ciphertext into plaintext, makes new key material, or hands out
// the right to do so (a grant).
const KEY_USE = [
  "kms:Decrypt",
  "kms:Encrypt",
  "kms:GenerateDataKey",
  "kms:GenerateDataKeyWithoutPlaintext",
  "kms:GenerateDataKeyPair",
  "kms:ReEncryptFrom",
  "kms:ReEncryptTo",
  "kms:CreateGrant",
];

const actionsOf = (s: Statement): string[] => (Array.isArray(s.Action) ? s.Action : [s.Action]);

/** IAM action matching: case-insensitive, `*` matches any run of characters. */
function allows(pattern: string, action: string): boolean {
  const regex = new RegExp(`^${pattern.replace(/[.+?^${}()|[\]\\]/g, "\\$&").replaceAll("*", ".*")}$`, "i");
  return regex.test(action);
}

function allowedFor(principal: string, action: string): Statement[] {
  return policy.Statement.filter(
    (s) =>
      s.Effect === "Allow" && s.Principal.AWS === principal && actionsOf(s).some((p) => allows(p, action)),
  );
}

/** Every encryption context the code sends to the master key, one of each kind. */
const CODE_CONTEXTS: ReadonlyArray<Record<string, string>> = [
  PEPPER_CONTEXT,
  userKeyContext(Buffer.alloc(32)),
  oauthAppContext("github-oauth", 1, "client-id"),
  oauthPkceVerifierContext(Buffer.alloc(32)),
];
const CODE_PURPOSES = [...new Set(CODE_CONTEXTS.map((c) => c.purpose ?? ""))].sort();

interface ContextCondition {
  Condition?: {
    StringEquals?: Record<string, string | string[]>;
    "ForAllValues:StringEquals"?: Record<string, string[]>;
  };
}

/** Whether a statement's conditions admit `context`: its purpose listed, every key allowed. */
function admits(statement: ContextCondition, context: Record<string, string>): boolean {
  const purposes = [statement.Condition?.StringEquals?.["kms:EncryptionContext:purpose"]].flat();
  const keys = statement.Condition?.["ForAllValues:StringEquals"]?.["kms:EncryptionContextKeys"] ?? [];
  return purposes.includes(context.purpose) && Object.keys(context).every((key) => keys.includes(key));
}

describe("deploy/kms-key-policy.json", () => {
  it("lets the broker role Decrypt, GenerateDataKey and ReEncrypt, and nothing else that uses the key", () => {
    const used = KEY_USE.filter((action) => allowedFor(BROKER_ROLE, action).length > 0);
    expect(used).toEqual(["kms:Decrypt", "kms:GenerateDataKey", "kms:ReEncryptFrom", "kms:ReEncryptTo"]);
  });

  it("binds every use to the encryption contexts the code sends: each admitted, no other purpose", () => {
    for (const action of ["kms:Decrypt", "kms:GenerateDataKey", "kms:ReEncryptFrom"]) {
      const statements = allowedFor(BROKER_ROLE, action);
      for (const context of CODE_CONTEXTS) {
        expect([action, context.purpose, statements.some((s) => admits(s, context))]).toEqual([
          action,
          context.purpose,
          true,
        ]);
      }
      for (const statement of statements) {
        const purposes = [statement.Condition?.StringEquals?.["kms:EncryptionContext:purpose"]].flat();
        expect(purposes.length, statement.Sid).toBeGreaterThan(0);
        for (const purpose of purposes) expect(CODE_PURPOSES, statement.Sid).toContain(purpose);
      }
    }
  });

  it("lets the broker resolve its key alias (DescribeKey), which carries no encryption context", () => {
    const statements = allowedFor(BROKER_ROLE, "kms:DescribeKey");
    expect(statements.some((s) => s.Condition === undefined)).toBe(true);
  });

  it("lets administrators manage the key but never use it or grant its use", () => {
    const admins = policy.Statement.filter((s) => s.Effect === "Allow" && s.Principal.AWS !== BROKER_ROLE);
    expect(admins.length).toBeGreaterThan(0);
    for (const admin of admins) {
      expect(
        KEY_USE.filter((action) => actionsOf(admin).some((p) => allows(p, action))),
        admin.Sid,
      ).toEqual([]);
    }
    // Someone must be able to change the policy, or AWS refuses it as a lock-out.
    expect(admins.some((s) => actionsOf(s).includes("kms:PutKeyPolicy"))).toBe(true);
  });

  it("denies key use to every other principal, whatever IAM policies or grants say", () => {
    const deny = policy.Statement.find((s) => s.Effect === "Deny" && s.Principal.AWS === "*");
    expect(deny?.Condition?.ArnNotEquals?.["aws:PrincipalArn"]).toBe(BROKER_ROLE);
    const denied =
      deny === undefined ? [] : KEY_USE.filter((action) => actionsOf(deny).some((p) => allows(p, action)));
    expect(denied).toEqual(KEY_USE);
  });

  it("M2 names each verb the broker uses on the key, with no wildcard, all under the context conditions", () => {
    const broker = policy.Statement.filter((s) => s.Effect === "Allow" && s.Principal.AWS === BROKER_ROLE);
    for (const statement of broker) {
      expect(
        actionsOf(statement).filter((a) => a.includes("*")),
        statement.Sid,
      ).toEqual([]);
    }
    const keyUse = broker.filter((s) => actionsOf(s).some((a) => KEY_USE.includes(a)));
    // One statement per family of contexts (user keys and pepper; OAuth secrets), same verbs.
    expect([...new Set(keyUse.flatMap(actionsOf))].sort()).toEqual([
      "kms:Decrypt",
      "kms:GenerateDataKey",
      "kms:ReEncryptFrom",
      "kms:ReEncryptTo",
    ]);
    for (const statement of keyUse) expect(statement.Condition, statement.Sid).toBeDefined();
  });
});

interface IamStatement {
  readonly Sid: string;
  readonly Effect: "Allow" | "Deny";
  readonly Action: string | string[];
  readonly Resource: string | string[];
  readonly Condition?: Record<string, Record<string, string | string[]>>;
}

const iamPolicy = JSON.parse(readRepoFile("deploy/broker-iam-policy.json")) as { Statement: IamStatement[] };
const KMS_KEY_ARN = /^arn:aws:kms:[a-z0-9-]+:[0-9]{12}:key\/[0-9a-f-]+$/;

describe("deploy/broker-iam-policy.json", () => {
  it("M2 lets the broker role use only its own master key ARNs, never any key (a writer's key cannot be substituted)", () => {
    const keyUse = iamPolicy.Statement.filter(
      (s) =>
        s.Effect === "Allow" &&
        [s.Action].flat().some((pattern) => KEY_USE.some((action) => allows(pattern, action))),
    );
    expect(keyUse.length).toBeGreaterThan(0);
    for (const statement of keyUse) {
      const resources = [statement.Resource].flat();
      expect(resources.length, statement.Sid).toBeGreaterThan(0);
      for (const resource of resources) expect(resource, statement.Sid).toMatch(KMS_KEY_ARN);
    }
  });

  it("M2 allows only Decrypt, GenerateDataKey and ReEncrypt, bound to the broker's encryption contexts", () => {
    const used = KEY_USE.filter((action) =>
      iamPolicy.Statement.some(
        (s) => s.Effect === "Allow" && [s.Action].flat().some((pattern) => allows(pattern, action)),
      ),
    );
    expect(used).toEqual(["kms:Decrypt", "kms:GenerateDataKey", "kms:ReEncryptFrom", "kms:ReEncryptTo"]);
    const keyUse = iamPolicy.Statement.filter((s) =>
      [s.Action].flat().some((pattern) => KEY_USE.some((action) => allows(pattern, action))),
    );
    for (const context of CODE_CONTEXTS) {
      expect([context.purpose, keyUse.some((s) => admits(s, context))]).toEqual([context.purpose, true]);
    }
    for (const statement of keyUse) {
      const purposes = [statement.Condition?.StringEquals?.["kms:EncryptionContext:purpose"]].flat();
      expect(purposes.length, statement.Sid).toBeGreaterThan(0);
      for (const purpose of purposes) expect(CODE_PURPOSES, statement.Sid).toContain(purpose);
    }
  });
});

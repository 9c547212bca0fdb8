import { describe, expect, it } from "vitest";
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

describe("deploy/kms-key-policy.json", () => {
  it("lets the broker role Decrypt, GenerateDataKey and ReEncrypt, and nothing else that uses the key", () => {
    const used = KEY_USE.filter((action) => allowedFor(BROKER_ROLE, action).length > 0);
    expect(used).toEqual(["kms:Decrypt", "kms:GenerateDataKey", "kms:ReEncryptFrom", "kms:ReEncryptTo"]);
  });

  it("binds every use to the encryption-context purposes the code sends", () => {
    const purposes = [PEPPER_CONTEXT.purpose, userKeyContext(Buffer.alloc(32)).purpose].sort();
    const contextKeys = [
      ...new Set([...Object.keys(PEPPER_CONTEXT), ...Object.keys(userKeyContext(Buffer.alloc(32)))]),
    ];
    for (const action of ["kms:Decrypt", "kms:GenerateDataKey", "kms:ReEncryptFrom"]) {
      for (const statement of allowedFor(BROKER_ROLE, action)) {
        expect(
          [statement.Condition?.StringEquals?.["kms:EncryptionContext:purpose"]].flat().sort(),
          action,
        ).toEqual(purposes);
        expect(
          statement.Condition?.["ForAllValues:StringEquals"]?.["kms:EncryptionContextKeys"],
          action,
        ).toEqual(expect.arrayContaining(contextKeys));
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
    expect(keyUse.flatMap(actionsOf).sort()).toEqual([
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
    const purposes = [PEPPER_CONTEXT.purpose, userKeyContext(Buffer.alloc(32)).purpose].sort();
    const used = KEY_USE.filter((action) =>
      iamPolicy.Statement.some(
        (s) => s.Effect === "Allow" && [s.Action].flat().some((pattern) => allows(pattern, action)),
      ),
    );
    expect(used).toEqual(["kms:Decrypt", "kms:GenerateDataKey", "kms:ReEncryptFrom", "kms:ReEncryptTo"]);
    for (const statement of iamPolicy.Statement.filter((s) =>
      [s.Action].flat().some((pattern) => KEY_USE.some((action) => allows(pattern, action))),
    )) {
      expect([statement.Condition?.StringEquals?.["kms:EncryptionContext:purpose"]].flat().sort()).toEqual(
        purposes,
      );
      expect(statement.Condition?.["ForAllValues:StringEquals"]?.["kms:EncryptionContextKeys"]).toEqual([
        "purpose",
        "user_ref",
      ]);
    }
  });
});

import { describe, expect, it } from "vitest";
import {
  createFieldRedactor,
  type FieldRedactor,
  redactInSlices,
} from "../../../src/outbound/field-redactor.js";
import { compileRedactionRules } from "../../../src/outbound/redaction-rules.js";
import { expectBrokerError } from "../../support/broker-errors.js";

const FIELDS = new Set(["access_token", "client_secret"]);
const TOKEN = "EAABpagetoken1234567890";

/** Feeds `body` through a fresh redactor in pieces of `step` bytes, as a stream would. */
function redactInPieces(body: string, step: number, contentType = "application/json"): string {
  const redactor = createFieldRedactor(FIELDS, contentType);
  const bytes = Buffer.from(body, "utf8");
  const out: Buffer[] = [];
  for (let at = 0; at < bytes.length; at += step) out.push(redactor.push(bytes.subarray(at, at + step)));
  out.push(redactor.flush());
  return Buffer.concat(out).toString("utf8");
}

const run = (r: FieldRedactor, body: string) => redactInSlices(r, Buffer.from(body));

describe("JSON field redaction", () => {
  it("H95 replaces a declared field at any depth with a fixed marker and keeps valid JSON", async () => {
    const body = JSON.stringify({
      data: [
        { name: "Page", access_token: TOKEN, id: "1" },
        { nested: { deeper: [{ access_token: TOKEN, n: -1.5e3 }] } },
      ],
      paging: { cursors: { before: "x" } },
    });
    const redactor = createFieldRedactor(FIELDS, "application/json; charset=UTF-8");
    const out = (await run(redactor, body)).toString("utf8");
    expect(out).not.toContain(TOKEN);
    expect(JSON.parse(out)).toEqual({
      data: [
        { name: "Page", access_token: "[redacted]", id: "1" },
        { nested: { deeper: [{ access_token: "[redacted]", n: -1500 }] } },
      ],
      paging: { cursors: { before: "x" } },
    });
    expect(redactor.redactions).toBe(2);
  });

  it("H95 matches keys spelled with JSON escapes or in another case, and duplicate keys", async () => {
    const body = `{"acc\\u0065ss_token":"${TOKEN}","ACCESS_TOKEN":"${TOKEN}","access\\u005ftoken":"${TOKEN}","access_token":"a","access_token":"${TOKEN}"}`;
    const out = (await run(createFieldRedactor(FIELDS, "application/json"), body)).toString("utf8");
    expect(out).not.toContain(TOKEN);
    expect(out.match(/\[redacted\]/g)).toHaveLength(5);
    expect(() => JSON.parse(out)).not.toThrow();
  });

  it("H95 replaces object, array, number and literal values whole", async () => {
    const body = `{"client_secret":{"k":["${TOKEN}",{"x":1}]},"access_token":[1,2],"a":{"access_token":12.5e-1},"b":{"access_token":null}, "c": true}`;
    const out = JSON.parse((await run(createFieldRedactor(FIELDS, "application/json"), body)).toString());
    expect(out).toEqual({
      client_secret: "[redacted]",
      access_token: "[redacted]",
      a: { access_token: "[redacted]" },
      b: { access_token: "[redacted]" },
      c: true,
    });
  });

  it("H96 gives the same answer whatever the chunk boundaries (streamed bodies)", () => {
    const body = `{"data":[{"access_token":"${TOKEN}","id":"1","n":123},{"acc\\u0065ss_token":12345}],"x":"\\"access_token\\""}`;
    const whole = redactInPieces(body, body.length);
    for (const step of [1, 2, 3, 7, 16]) expect(redactInPieces(body, step)).toBe(whole);
    expect(whole).not.toContain(TOKEN);
    expect(JSON.parse(whole).x).toBe('"access_token"');
  });

  it("H97 refuses a body that claims JSON but is not, rather than pass a field through", async () => {
    for (const bad of [
      `{"access_token":"${TOKEN}"`,
      `{'access_token':'${TOKEN}'}`,
      `{"access_token":"${TOKEN}",}`,
      `{"a":01}`,
      `{"a":"x"} {"access_token":"${TOKEN}"}`,
      `<html>access_token=${TOKEN}</html>`,
      `{"a":"line\nbreak"}`,
      `{"a":NaN}`,
    ]) {
      const err = await expectBrokerError(
        run(createFieldRedactor(FIELDS, "application/json"), bad),
        "unavailable",
      );
      expect(err.message).not.toContain(TOKEN);
    }
  });

  it("H97 in a stream, emits nothing past the first byte that is not JSON", () => {
    const redactor = createFieldRedactor(FIELDS, "application/json");
    const first = redactor.push(Buffer.from('{"ok":1,'));
    expect(first.toString()).toBe('{"ok":1,');
    expect(() => redactor.push(Buffer.from(`access_token:"${TOKEN}"}`))).toThrow(/not valid JSON/);
  });

  it("H97 refuses nesting deeper than it follows", async () => {
    const deep = `${"[".repeat(600)}${"]".repeat(600)}`;
    await expectBrokerError(run(createFieldRedactor(FIELDS, "application/json"), deep), "unavailable");
  });

  it("passes an empty body and a body without declared fields unchanged", async () => {
    const body = Buffer.from('{"data":[{"name":"x"}]}');
    const redactor = createFieldRedactor(FIELDS, "application/json");
    expect((await redactInSlices(redactor, body)).equals(body)).toBe(true);
    expect(redactor.redactions).toBe(0);
    expect((await run(createFieldRedactor(FIELDS, "application/json"), "")).length).toBe(0);
  });

  it("H96 redacts a body larger than one slice", async () => {
    const items = Array.from({ length: 3000 }, (_, i) => ({ id: i, access_token: `${TOKEN}${i}` }));
    const redactor = createFieldRedactor(FIELDS, "application/json");
    const out = (await run(redactor, JSON.stringify({ data: items }))).toString();
    expect(out).not.toContain(TOKEN);
    expect(redactor.redactions).toBe(3000);
    expect(JSON.parse(out).data[2999]).toEqual({ id: 2999, access_token: "[redacted]" });
  });
});

describe("form and other bodies", () => {
  it("H98 replaces declared fields in a form-encoded body, names decoded, & and ; separators", () => {
    const body = `access_token=${TOKEN}&expires=3600;acc%65ss%5Ftoken=${TOKEN}&Client+Secret=x&client_secret=${TOKEN}`;
    for (const step of [1, 5, body.length]) {
      const out = redactInPieces(body, step, "application/x-www-form-urlencoded");
      expect(out).not.toContain(TOKEN);
      expect(out).toBe(
        "access_token=%5Bredacted%5D&expires=3600;acc%65ss%5Ftoken=%5Bredacted%5D&Client+Secret=x&client_secret=%5Bredacted%5D",
      );
    }
  });

  it("H98 refuses a body of another type that names a declared field, even split across chunks", () => {
    expect(() => redactInPieces(`token: access_token ${TOKEN}`, 3, "text/plain")).toThrow(/cannot redact/);
    // No content type at all: treated as unknown, not as JSON.
    const untyped = createFieldRedactor(FIELDS, undefined);
    expect(() => untyped.push(Buffer.from(`{"access_token":"${TOKEN}"}`))).toThrow(/cannot redact/);
    expect(redactInPieces("plain text without it", 3, "text/plain")).toBe("plain text without it");
  });
});

describe("redaction rules", () => {
  it("H99 scopes rules to their paths, matched decoded and case-insensitively", () => {
    const rules = compileRedactionRules([
      { paths: ["/webhook_endpoints", "/webhook_endpoints/*"], fields: ["secret"] },
      { fields: ["Private_Key"] },
    ]);
    expect([...(rules?.fieldsFor("/webhook_endpoints") ?? [])].sort()).toEqual(["private_key", "secret"]);
    expect([...(rules?.fieldsFor("/Webhook_Endpoints/we_1") ?? [])].sort()).toEqual([
      "private_key",
      "secret",
    ]);
    expect([...(rules?.fieldsFor("/webhook%5Fendpoints") ?? [])].sort()).toEqual(["private_key", "secret"]);
    expect([...(rules?.fieldsFor("/charges") ?? [])]).toEqual(["private_key"]);
    expect(compileRedactionRules(undefined)).toBeUndefined();
  });
});

import { readdirSync } from "node:fs";
import { beforeAll, describe, expect, it } from "vitest";
import { loadConfig } from "../../../src/config/config.js";
import {
  asArray,
  asObject,
  asString,
  at,
  isObject,
  type Json,
  type JsonObject,
  loadK8sManifests,
  repoPath,
} from "./deploy-files.js";
import { containersOf, podSpecOf, renderKustomization } from "./kustomize-render.js";

const BASE = "deploy/k8s";
const OVERLAY = "deploy/k8s-overlays/aws-nlb-tls";
const OVERLAYS = readdirSync(repoPath("deploy/k8s-overlays")).map((d) => `deploy/k8s-overlays/${d}`);
const DIGEST_PINNED = /^[a-z0-9.-]+(:\d+)?\/[a-z0-9._/-]+@sha256:[0-9a-f]{64}$/;
const PLACEHOLDER_DIGEST = `sha256:${"0".repeat(64)}`;

function find(objects: readonly JsonObject[], kind: string, name: string): JsonObject {
  const found = objects.find((o) => o.kind === kind && at(o, "metadata", "name") === name);
  if (found === undefined) throw new Error(`no ${kind}/${name}`);
  return found;
}

function configMapData(objects: readonly JsonObject[]): Record<string, string> {
  const data = asObject(at(find(objects, "ConfigMap", "keybroker-config"), "data"), "data");
  return Object.fromEntries(Object.entries(data).map(([k, v]) => [k, asString(v, k)]));
}

describe("Kustomize renders of deploy/k8s (the base) and deploy/k8s-overlays/*", () => {
  let renders: Array<{ dir: string; objects: JsonObject[] }>;

  beforeAll(() => {
    renders = [BASE, ...OVERLAYS].map((dir) => ({ dir, objects: renderKustomization(dir) }));
  });

  it("the base renders exactly today's manifests in deploy/k8s", () => {
    const files = loadK8sManifests().map((m) => `${m.kind}/${m.name}`);
    const rendered = renderKustomization(BASE).map(
      (o) => `${String(o.kind)}/${String(at(o, "metadata", "name"))}`,
    );
    expect(rendered.sort()).toEqual(files.sort());
  });

  it("K254 every rendered container image is pinned by sha256 digest, and the shipped digests are obvious placeholders", () => {
    for (const { dir, objects } of renders) {
      const images = containersOf(objects).map((c) => asString(c.image, "image"));
      expect(images.length, dir).toBeGreaterThan(0);
      for (const image of images) {
        expect(image, `${dir}: ${image}`).toMatch(DIGEST_PINNED);
        // Nobody can pull these by mistake: an .invalid registry (RFC 2606) and an all-zero digest.
        expect(image, dir).toMatch(/^registry\.example\.invalid\//);
        expect(image.endsWith(`@${PLACEHOLDER_DIGEST}`), dir).toBe(true);
      }
    }
  });

  it("K255 inlines no Secret value: no Secret objects, credentials only through secretKeyRef, TLS keys from Secret volumes", () => {
    const credentialName = /(DATABASE_URL|PASSWORD|SECRET|TOKEN|OTEL_EXPORTER_OTLP_(TRACES_)?HEADERS)/;
    for (const { dir, objects } of renders) {
      expect(
        objects.map((o) => o.kind),
        dir,
      ).not.toContain("Secret");
      const text = JSON.stringify(objects);
      expect(text, dir).not.toMatch(/-----BEGIN/);
      expect(text, dir).not.toMatch(/postgres(ql)?:\/\/[^"\s]*:[^"\s@]*@/);
      for (const key of Object.keys(configMapData(objects))) expect(key, dir).not.toMatch(credentialName);
      for (const container of containersOf(objects)) {
        for (const env of asArray(container.env ?? [], "env").map((e) => asObject(e, "env"))) {
          const name = asString(env.name, "env name");
          if (credentialName.test(name)) {
            expect(env.value, `${dir}: ${name}`).toBeUndefined();
            expect(at(env, "valueFrom", "secretKeyRef", "name"), `${dir}: ${name}`).toBeDefined();
          }
        }
      }
      for (const object of objects) {
        for (const volume of asArray(podSpecOf(object)?.volumes ?? [], "volumes").map((v) =>
          asObject(v, "volume"),
        )) {
          // Key material only ever arrives as a reference to a Secret, mounted read-only.
          if (isObject(volume.secret))
            expect(at(volume, "secret", "secretName"), dir).toEqual(expect.any(String));
        }
      }
    }
  });

  it("K256 every workload in every render has probes (long-running ones), a restricted securityContext, requests and a memory limit", () => {
    for (const { dir, objects } of renders) {
      for (const object of objects) {
        const spec = podSpecOf(object);
        if (spec === undefined) continue;
        const where = `${dir} ${String(object.kind)}/${String(at(object, "metadata", "name"))}`;
        expect(at(spec, "securityContext", "runAsNonRoot"), where).toBe(true);
        expect(at(spec, "securityContext", "seccompProfile", "type"), where).toBe("RuntimeDefault");
        expect(at(spec, "automountServiceAccountToken"), where).toBe(false);
        for (const c of asArray(spec.containers, "containers").map((x) => asObject(x, "container"))) {
          expect(at(c, "securityContext", "readOnlyRootFilesystem"), where).toBe(true);
          expect(at(c, "securityContext", "allowPrivilegeEscalation"), where).toBe(false);
          expect(at(c, "securityContext", "capabilities", "drop"), where).toEqual(["ALL"]);
          expect(at(c, "resources", "requests", "cpu"), where).toBeDefined();
          expect(at(c, "resources", "requests", "memory"), where).toBeDefined();
          expect(at(c, "resources", "limits", "memory"), where).toBeDefined();
          if (object.kind === "Deployment") {
            for (const probe of ["startupProbe", "readinessProbe", "livenessProbe"]) {
              expect(isObject(c[probe]), `${where} ${probe}`).toBe(true);
            }
          }
          for (const mount of asArray(c.volumeMounts ?? [], "mounts").map((m) => asObject(m, "mount"))) {
            if (mount.name !== "tmp") expect(mount.readOnly, `${where} ${String(mount.name)}`).toBe(true);
          }
        }
      }
    }
  });
});

describe(`${OVERLAY}: the broker's own mTLS behind an NLB that passes TCP through`, () => {
  let objects: JsonObject[];
  let container: JsonObject;

  beforeAll(() => {
    objects = renderKustomization(OVERLAY);
    container = asObject(
      at(podSpecOf(find(objects, "Deployment", "keybroker")), "containers", 0),
      "container",
    );
  });

  it("K257 configures TLS with a client CA (mTLS) on the app ports, and production accepts it", () => {
    const data = configMapData(objects);
    expect(data.KEYBROKER_ALLOW_PLAINTEXT_LISTENERS).toBeUndefined();
    const config = loadConfig({ ...data, DATABASE_URL: "postgres://keybroker_runtime:x@db.internal:5432/k" });
    expect(config.production).toBe(true);
    expect(config.grpcTls).toEqual({
      certFile: "/etc/keybroker/tls/tls.crt",
      keyFile: "/etc/keybroker/tls/tls.key",
      clientCaFile: "/etc/keybroker/client-ca/ca.crt",
    });
    // Each file lives under a read-only mount of a Secret volume.
    const pod = asObject(podSpecOf(find(objects, "Deployment", "keybroker")), "pod");
    const volumes = new Map(
      asArray(pod.volumes, "volumes").map((v) => [asString(at(v, "name"), "name"), asObject(v, "volume")]),
    );
    const mounts = asArray(container.volumeMounts, "mounts").map((m) => asObject(m, "mount"));
    for (const file of [config.grpcTls?.certFile, config.grpcTls?.keyFile, config.grpcTls?.clientCaFile]) {
      const mount = mounts.find((m) => String(file).startsWith(`${asString(m.mountPath, "path")}/`));
      expect(mount?.readOnly, file).toBe(true);
      expect(at(volumes.get(asString(mount?.name, "mount name")), "secret", "secretName"), file).toMatch(
        /^keybroker-/,
      );
    }
    // The non-root user reads the keys through the pod's fsGroup; nobody else can.
    expect(at(pod, "securityContext", "fsGroup")).toBe(10001);
    for (const volume of volumes.values()) {
      if (isObject(volume.secret)) expect(at(volume, "secret", "defaultMode")).toBe(0o440);
    }
  });

  it("K257 probes the plaintext ops port, since the kubelet's gRPC probe cannot present a client certificate", () => {
    const metricsPort = asArray(container.ports, "ports").find((p) => at(p, "name") === "metrics");
    expect(at(metricsPort, "containerPort")).toBe(9464);
    expect(at(container, "readinessProbe", "httpGet")).toEqual({ path: "/readyz", port: "metrics" });
    expect(at(container, "livenessProbe", "httpGet")).toEqual({ path: "/livez", port: "metrics" });
    expect(at(container, "startupProbe", "httpGet")).toEqual({ path: "/livez", port: "metrics" });
  });

  it("K258 publishes gRPC on 443 through an NLB in TCP passthrough, open only to the listed source ranges", () => {
    const service = find(objects, "Service", "keybroker-public");
    const annotations = asObject(at(service, "metadata", "annotations"), "annotations");
    expect(at(service, "spec", "type")).toBe("LoadBalancer");
    expect(at(service, "spec", "loadBalancerClass")).toBe("service.k8s.aws/nlb");
    // A TLS listener on the NLB would terminate TLS and drop the client certificate.
    expect(Object.keys(annotations).filter((a) => /ssl-cert|ssl-ports/.test(a))).toEqual([]);
    expect(asArray(at(service, "spec", "ports"), "ports")).toEqual([
      { name: "grpc-tls", port: 443, targetPort: "grpc", protocol: "TCP" },
    ]);
    const ranges = asArray(at(service, "spec", "loadBalancerSourceRanges"), "ranges").map((r) =>
      asString(r, "range"),
    );
    expect(ranges.length).toBeGreaterThan(0);
    expect(ranges).not.toContain("0.0.0.0/0");
    // The NetworkPolicy admits the same addresses, on the gRPC port only.
    const ingress = asArray(at(find(objects, "NetworkPolicy", "keybroker"), "spec", "ingress"), "ingress");
    const fromRanges = ingress.filter((rule: Json) =>
      asArray(at(rule, "from"), "from").some((peer) => ranges.includes(String(at(peer, "ipBlock", "cidr")))),
    );
    expect(fromRanges).toHaveLength(1);
    expect(at(fromRanges[0], "ports")).toEqual([{ port: 50051, protocol: "TCP" }]);
  });
});

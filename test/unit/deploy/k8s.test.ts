import { beforeAll, describe, expect, it } from "vitest";
import { envSchema, loadConfig, loadDatabaseConfig, loadRuntimeRole } from "../../../src/config/config.js";
import {
  asArray,
  asObject,
  asString,
  at,
  isObject,
  type Json,
  type JsonObject,
  loadK8sManifests,
  type Manifest,
  manifest,
  RUNTIME_VARIABLES,
  readRepoFile,
} from "./deploy-files.js";

/**
 * Connections the broker's replicas may hold together. Postgres defaults to max_connections =
 * 100; the rest is left for the migration Job, superuser reserve and other clients
 * (docs/scaling.md).
 */
const POSTGRES_CONNECTION_BUDGET = 80;

let all: Manifest[];
let deployment: JsonObject;
let pod: JsonObject;
let container: JsonObject;
let job: JsonObject;
let config: Record<string, string>;

beforeAll(() => {
  all = loadK8sManifests();
  deployment = manifest(all, "Deployment", "keybroker");
  pod = asObject(at(deployment, "spec", "template", "spec"), "pod spec");
  container = asObject(at(pod, "containers", 0), "broker container");
  job = manifest(all, "Job", "keybroker-migrate");
  const data = asObject(at(manifest(all, "ConfigMap", "keybroker-config"), "data"), "ConfigMap data");
  config = Object.fromEntries(Object.entries(data).map(([k, v]) => [k, asString(v, k)]));
});

function podLabels(workload: JsonObject): JsonObject {
  return asObject(at(workload, "spec", "template", "metadata", "labels"), "pod labels");
}

function selects(selector: Json | undefined, labels: JsonObject): boolean {
  const wanted = asObject(selector, "matchLabels");
  return Object.keys(wanted).length > 0 && Object.entries(wanted).every(([k, v]) => labels[k] === v);
}

function envNames(c: JsonObject): string[] {
  return asArray(c.env ?? [], "env").map((e) => asString(at(e, "name"), "env name"));
}

function dockerfileUser(): number {
  const user = readRepoFile("Dockerfile")
    .split("\n")
    .filter((l) => l.startsWith("USER "))
    .at(-1);
  return Number(user?.slice("USER ".length).split(":")[0]);
}

function ports(rule: Json | undefined): string[] {
  return asArray(at(rule, "ports") ?? [], "ports").map(
    (p) => `${at(p, "port")}/${at(p, "protocol") ?? "TCP"}`,
  );
}

describe("deploy/k8s manifests", () => {
  it("parse as YAML, each with a kind and a name, all in the keybroker namespace", () => {
    const kinds = new Set(all.map((m) => m.kind));
    for (const kind of ["Namespace", "ServiceAccount", "ConfigMap", "Deployment", "Service"])
      expect(kinds).toContain(kind);
    for (const kind of ["PodDisruptionBudget", "HorizontalPodAutoscaler", "NetworkPolicy", "Job"])
      expect(kinds).toContain(kind);
    for (const m of all.filter((m) => m.kind !== "Namespace")) {
      expect(at(m.doc, "metadata", "namespace"), `${m.file} ${m.kind}/${m.name}`).toBe("keybroker");
    }
  });

  it("enforce the restricted Pod Security Standard on the namespace", () => {
    const labels = at(manifest(all, "Namespace", "keybroker"), "metadata", "labels");
    expect(at(labels, "pod-security.kubernetes.io/enforce")).toBe("restricted");
  });

  it("set only envSchema variables on the broker and the migration Job", () => {
    const known = new Set(Object.keys(envSchema.shape));
    const jobContainer = asObject(at(job, "spec", "template", "spec", "containers", 0), "job container");
    const names = [...Object.keys(config), ...envNames(container), ...envNames(jobContainer)];
    expect(names.filter((n) => !known.has(n) && !(n in RUNTIME_VARIABLES))).toEqual([]);
    expect(at(container, "envFrom", 0, "configMapRef", "name")).toBe("keybroker-config");
  });

  it("combine the ConfigMap and the DATABASE_URL Secret into a configuration loadConfig accepts for production", () => {
    const loaded = loadConfig({
      ...config,
      DATABASE_URL: "postgres://keybroker:secret@db.internal:5432/keybroker",
    });
    expect(loaded.production).toBe(true);
    expect(loaded.keyring).toMatchObject({ kind: "aws-kms", endpoint: undefined });
    expect(loaded.grpc.port).toBe(50051);
  });

  it("take DATABASE_URL from a Secret and keep credentials out of the ConfigMap", () => {
    for (const secret of ["DATABASE_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]) {
      expect(Object.keys(config)).not.toContain(secret);
    }
    const jobContainer = at(job, "spec", "template", "spec", "containers", 0);
    // M1: the broker connects as the runtime role, the migration Job as the owner.
    for (const [c, secret] of [
      [container, "keybroker-db"],
      [jobContainer, "keybroker-db-owner"],
    ] as const) {
      const db = asArray(at(c, "env"), "env").find((e) => at(e, "name") === "DATABASE_URL");
      expect(at(db, "valueFrom", "secretKeyRef", "name")).toBe(secret);
      expect(at(db, "value")).toBeUndefined();
    }
    const jobEnv = Object.fromEntries(
      asArray(at(jobContainer, "env"), "env").map((e) => [
        asString(at(e, "name"), "name"),
        String(at(e, "value") ?? ""),
      ]),
    );
    expect(loadDatabaseConfig({ ...jobEnv, DATABASE_URL: "postgres://m@db:5432/k" }).kind).toBe("postgres");
  });

  it("G59 has the migration Job grant the runtime role, and sign audit checkpoints with an HMAC KMS key", () => {
    const jobContainer = at(job, "spec", "template", "spec", "containers", 0);
    const role = asArray(at(jobContainer, "env"), "env").find(
      (e) => at(e, "name") === "KEYBROKER_RUNTIME_DB_ROLE",
    );
    expect(loadRuntimeRole({ KEYBROKER_RUNTIME_DB_ROLE: asString(at(role, "value"), "role") })).toBe(
      "keybroker_runtime",
    );
    const loaded = loadConfig({ ...config, DATABASE_URL: "postgres://keybroker_runtime:s@db:5432/k" });
    expect(loaded.auditCheckpoints.key).toMatchObject({ kind: "aws-kms" });
  });

  it("probe the broker with native gRPC health checks on its gRPC port", () => {
    const grpcPort = asArray(container.ports, "ports").find((p) => at(p, "name") === "grpc");
    expect(at(grpcPort, "containerPort")).toBe(Number(config.KEYBROKER_GRPC_PORT));
    for (const probe of ["startupProbe", "readinessProbe", "livenessProbe"]) {
      expect(at(container, probe, "grpc", "port"), probe).toBe(Number(config.KEYBROKER_GRPC_PORT));
    }
  });

  it("run every pod as the image's non-root user with a read-only root, no capabilities and RuntimeDefault seccomp", () => {
    for (const [name, spec] of [
      ["Deployment", pod],
      ["Job", asObject(at(job, "spec", "template", "spec"), "job pod")],
    ] as const) {
      expect(at(spec, "securityContext", "runAsNonRoot"), name).toBe(true);
      expect(at(spec, "securityContext", "runAsUser"), name).toBe(dockerfileUser());
      expect(at(spec, "securityContext", "seccompProfile", "type"), name).toBe("RuntimeDefault");
      expect(at(spec, "automountServiceAccountToken"), name).toBe(false);
      for (const c of asArray(spec.containers, "containers")) {
        expect(at(c, "securityContext", "readOnlyRootFilesystem"), name).toBe(true);
        expect(at(c, "securityContext", "allowPrivilegeEscalation"), name).toBe(false);
        expect(at(c, "securityContext", "capabilities", "drop"), name).toEqual(["ALL"]);
      }
    }
  });

  it("give a terminating pod longer than the preStop pause plus the broker's drain grace", () => {
    const preStopMs = Number(at(container, "lifecycle", "preStop", "sleep", "seconds") ?? 0) * 1000;
    const graceMs = Number(config.KEYBROKER_SHUTDOWN_GRACE_MS);
    expect(graceMs).toBeGreaterThan(0);
    expect(Number(pod.terminationGracePeriodSeconds) * 1000).toBeGreaterThan(preStopMs + graceMs);
  });

  it("request CPU and memory and cap memory", () => {
    expect(at(container, "resources", "requests", "cpu")).toBeDefined();
    expect(at(container, "resources", "requests", "memory")).toBeDefined();
    expect(at(container, "resources", "limits", "memory")).toBeDefined();
  });

  it("expose gRPC through Services with appProtocol grpc that select the broker pods", () => {
    for (const name of ["keybroker", "keybroker-pods"]) {
      const service = manifest(all, "Service", name);
      expect(selects(at(service, "spec", "selector"), podLabels(deployment)), name).toBe(true);
      const grpc = asArray(at(service, "spec", "ports"), "ports").find((p) => at(p, "name") === "grpc");
      expect(grpc, name).toMatchObject({ port: 50051, targetPort: "grpc", appProtocol: "grpc" });
    }
    expect(at(manifest(all, "Service", "keybroker-pods"), "spec", "clusterIP")).toBe("None");
  });

  it("scale the Deployment on CPU within the Postgres connection budget", () => {
    const hpa = manifest(all, "HorizontalPodAutoscaler", "keybroker");
    expect(at(hpa, "spec", "scaleTargetRef")).toMatchObject({ kind: "Deployment", name: "keybroker" });
    expect(at(hpa, "spec", "metrics", 0, "resource", "name")).toBe("cpu");
    expect(Number(at(hpa, "spec", "minReplicas"))).toBeGreaterThanOrEqual(2);
    expect(at(deployment, "spec", "replicas"), "the HPA owns the replica count").toBeUndefined();
    const pool = Number(config.KEYBROKER_DB_MAX_CONNECTIONS);
    expect(Number(at(hpa, "spec", "maxReplicas")) * pool).toBeLessThanOrEqual(POSTGRES_CONNECTION_BUDGET);
  });

  it("disrupt at most one broker pod voluntarily, fewer than the HPA minimum", () => {
    const pdb = manifest(all, "PodDisruptionBudget", "keybroker");
    expect(selects(at(pdb, "spec", "selector", "matchLabels"), podLabels(deployment))).toBe(true);
    const minReplicas = Number(
      at(manifest(all, "HorizontalPodAutoscaler", "keybroker"), "spec", "minReplicas"),
    );
    expect(Number(at(pdb, "spec", "maxUnavailable"))).toBeLessThan(minReplicas);
  });

  it("give the broker the IAM role the KMS key policy trusts, and the migration Job no role", () => {
    const keyPolicy = JSON.parse(readRepoFile("deploy/kms-key-policy.json")) as Json;
    const brokerStatement = asArray(at(keyPolicy, "Statement"), "Statement").find(
      (s) => at(s, "Sid") === "BrokerUsesTheKeyOnlyWithItsEncryptionContexts",
    );
    const role = at(brokerStatement, "Principal", "AWS");
    expect(pod.serviceAccountName).toBe("keybroker");
    expect(
      at(
        manifest(all, "ServiceAccount", "keybroker"),
        "metadata",
        "annotations",
        "eks.amazonaws.com/role-arn",
      ),
    ).toBe(role);
    const jobAccount = asString(
      at(job, "spec", "template", "spec", "serviceAccountName"),
      "job service account",
    );
    expect(jobAccount).not.toBe("keybroker");
    expect(at(manifest(all, "ServiceAccount", jobAccount), "metadata", "annotations")).toBeUndefined();
  });

  it("admit only the main app's pods and let the broker reach only DNS, Postgres and public HTTPS", () => {
    const policy = manifest(all, "NetworkPolicy", "keybroker");
    expect(selects(at(policy, "spec", "podSelector", "matchLabels"), podLabels(deployment))).toBe(true);
    expect(at(policy, "spec", "policyTypes")).toEqual(["Ingress", "Egress"]);
    const ingress = asArray(at(policy, "spec", "ingress"), "ingress");
    // The main app's pods reach the API ports; the monitoring namespace reaches /metrics only.
    expect(ingress).toHaveLength(2);
    const from = asArray(at(ingress[0], "from"), "from");
    expect(
      from.every((peer) => isObject(at(peer, "podSelector")) && isObject(at(peer, "namespaceSelector"))),
    ).toBe(true);
    expect(ports(ingress[0]).sort()).toEqual(["50051/TCP", "8080/TCP"]);
    expect(ports(ingress[1])).toEqual(["9464/TCP"]);

    const egress = asArray(at(policy, "spec", "egress"), "egress");
    const allowed = new Set(egress.flatMap((rule) => ports(rule)));
    expect([...allowed].sort()).toEqual(["443/TCP", "53/TCP", "53/UDP", "5432/TCP"]);
    const anywhere = egress.find((rule) => at(rule, "to", 0, "ipBlock", "cidr") === "0.0.0.0/0");
    expect(ports(anywhere)).toEqual(["443/TCP"]);
    expect(at(anywhere, "to", 0, "ipBlock", "except")).toEqual(
      expect.arrayContaining(["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16"]),
    );

    const migrate = manifest(all, "NetworkPolicy", "keybroker-migrate");
    expect(selects(at(migrate, "spec", "podSelector", "matchLabels"), podLabels(job))).toBe(true);
    const migrateEgress = asArray(at(migrate, "spec", "egress"), "egress").flatMap((rule) => ports(rule));
    expect([...new Set(migrateEgress)].sort()).toEqual(["53/TCP", "53/UDP", "5432/TCP"]);
  });

  it("run `keybroker migrate` as a Job on the broker's image", () => {
    const jobPod = asObject(at(job, "spec", "template", "spec"), "job pod");
    const jobContainer = asObject(at(jobPod, "containers", 0), "job container");
    expect(jobContainer.args).toEqual(["migrate"]);
    expect(jobContainer.image).toBe(container.image);
    expect(jobPod.restartPolicy).toBe("Never");
    // One worker per pod: the HPA scales pods on their CPU request, not the node's cores.
    expect(container.args).toEqual(["serve", "--workers", "1"]);
  });
});

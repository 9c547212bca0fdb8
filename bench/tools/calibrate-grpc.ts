/** Bare grpc-js server CPU per call, the floor any grpc-js service pays: `tsx bench/tools/calibrate-grpc.ts`. */
import { spawn } from "node:child_process";
import { Client, credentials, Metadata } from "@grpc/grpc-js";
import { runLoad } from "../lib/load.js";
import { processCpuMicros } from "../lib/process-cpu.js";

const SERVER = `
import { Server, ServerCredentials } from "@grpc/grpc-js";
const s = new Server();
const id = (x) => x;
s.addService(
  { Check: { path: "/grpc.health.v1.Health/Check", requestStream: false, responseStream: false,
    requestSerialize: id, requestDeserialize: id, responseSerialize: id, responseDeserialize: id } },
  { Check: (call, cb) => cb(null, Buffer.from([8, 1])) },
);
s.bindAsync("127.0.0.1:0", ServerCredentials.createInsecure(), (e, port) => console.log("PORT", port));
`;

const child = spawn(process.execPath, ["--input-type=module", "-e", SERVER], {
  cwd: new URL("../..", import.meta.url).pathname,
  stdio: ["ignore", "pipe", "inherit"],
});
const pid = child.pid ?? 0;
const port = await new Promise<number>((resolve) =>
  child.stdout?.on("data", (data: Buffer) => {
    const match = /PORT (\d+)/.exec(String(data));
    if (match) resolve(Number(match[1]));
  }),
);
const raw = new Client(`127.0.0.1:${port}`, credentials.createInsecure());
const id = (b: Buffer) => b;
const call = () =>
  new Promise((resolve, reject) =>
    raw.makeUnaryRequest(
      "/grpc.health.v1.Health/Check",
      id,
      id,
      Buffer.alloc(0),
      new Metadata(),
      {},
      (err, res) => (err ? reject(err) : resolve(res)),
    ),
  );
for (const concurrency of [1, 64]) {
  await runLoad(3000, concurrency, call);
  const cpu0 = processCpuMicros(pid);
  const result = await runLoad(5000, concurrency, call);
  const cpu = (processCpuMicros(pid) - cpu0) / 5000;
  console.log(
    `bare grpc-js, concurrency ${concurrency}: ${cpu.toFixed(0)} µs CPU/call, ${result.callsPerSecond.toFixed(0)} calls/s`,
  );
}
raw.close();
child.kill();

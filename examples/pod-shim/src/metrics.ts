// The VM's statistics for Prometheus: the library returns figures (vm.stats()), the shim exports
// them, as Kata's shim serves its sandbox's hypervisor metrics. One stats() call per scrape, in a
// registry of the shim's own; names follow Prometheus' conventions (base units in the name:
// seconds, bytes; `_total` for counters), labelled with the sandbox id and the device.
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Counter, Gauge, Registry } from 'prom-client';
import type { Hypervisor, VmStats } from 'sandbox-vmm';

const NS_PER_SECOND = 1e9;

/**
 * A bigint figure as Prometheus' float64 sample: exact up to 2^53, rounded beyond (as any
 * Prometheus client does); the library's own value stays exact for those who need it.
 */
const sample = (value: bigint): number => Number(value);

export class SandboxMetrics {
  readonly registry = new Registry();
  readonly #vm: Hypervisor;
  readonly #gauges: Gauge[] = [];
  readonly #counters: Counter[] = [];

  readonly #uptime = this.#gauge('sandbox_uptime_seconds', 'Time since the hypervisor process started.', []);
  readonly #vcpuSeconds = this.#counter('sandbox_vcpu_cpu_seconds_total', 'Host CPU time of a vCPU thread (user and system).', ['vcpu']);
  readonly #rss = this.#gauge('sandbox_process_resident_memory_bytes', 'Resident set size of a process of the VM.', ['pid', 'role']);
  readonly #pss = this.#gauge('sandbox_process_proportional_memory_bytes', 'Proportional set size of a process of the VM (shared pages divided among sharers).', ['pid', 'role']);
  readonly #bootMemory = this.#gauge('sandbox_guest_memory_boot_bytes', 'Guest boot memory.', []);
  readonly #pluggedMemory = this.#gauge('sandbox_guest_memory_plugged_bytes', 'Guest memory plugged beyond boot (DIMMs, virtio-mem).', []);
  readonly #balloonActual = this.#gauge('sandbox_guest_memory_balloon_actual_bytes', 'Guest memory as the balloon leaves it.', []);
  readonly #diskReadBytes = this.#counter('sandbox_disk_read_bytes_total', 'Bytes the guest read from a disk.', ['device']);
  readonly #diskWrittenBytes = this.#counter('sandbox_disk_written_bytes_total', 'Bytes the guest wrote to a disk.', ['device']);
  readonly #diskReads = this.#counter('sandbox_disk_read_operations_total', 'Read requests the guest made on a disk.', ['device']);
  readonly #diskWrites = this.#counter('sandbox_disk_write_operations_total', 'Write requests the guest made on a disk.', ['device']);
  readonly #diskFlushes = this.#counter('sandbox_disk_flush_operations_total', 'Flush requests the guest made on a disk.', ['device']);
  readonly #nicReceivedBytes = this.#counter('sandbox_network_tap_receive_bytes_total', 'Bytes the tap received (sent by the guest).', ['device', 'tap']);
  readonly #nicTransmittedBytes = this.#counter('sandbox_network_tap_transmit_bytes_total', 'Bytes the tap transmitted (to the guest).', ['device', 'tap']);
  readonly #nicReceivedPackets = this.#counter('sandbox_network_tap_receive_packets_total', 'Packets the tap received (sent by the guest).', ['device', 'tap']);
  readonly #nicTransmittedPackets = this.#counter('sandbox_network_tap_transmit_packets_total', 'Packets the tap transmitted (to the guest).', ['device', 'tap']);

  constructor(vm: Hypervisor) {
    this.#vm = vm;
  }

  /** Reads the VM's statistics now and renders every metric in Prometheus' text format. */
  async scrape(signal?: AbortSignal): Promise<string> {
    const stats = await this.#vm.stats(signal ? { signal } : {});
    this.#update(stats, this.#vm.id ?? '');
    return this.registry.metrics();
  }

  /** Serves scrape() at GET /metrics; resolves once listening, with the bound address. */
  async serve(host: string, port: number): Promise<{ server: Server; address: AddressInfo }> {
    const server = createServer((request, response) => {
      if (request.method !== 'GET' || request.url !== '/metrics') {
        response.writeHead(404).end();
        return;
      }
      this.scrape().then(
        (text) => response.writeHead(200, { 'content-type': this.registry.contentType }).end(text),
        (error: unknown) => response.writeHead(503, { 'content-type': 'text/plain' }).end(`stats unavailable: ${String(error)}\n`),
      );
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => resolve());
    });
    return { server, address: server.address() as AddressInfo };
  }

  #update(stats: VmStats, sandbox: string): void {
    // Series of devices and processes that are gone disappear: every metric starts empty each scrape.
    for (const metric of [...this.#gauges, ...this.#counters]) metric.reset();
    const count = (counter: Counter, labels: Record<string, string>, value: bigint) => counter.inc({ sandbox_id: sandbox, ...labels }, sample(value));
    const set = (gauge: Gauge, labels: Record<string, string>, value: number) => gauge.set({ sandbox_id: sandbox, ...labels }, value);

    set(this.#uptime, {}, stats.uptimeMs / 1000);
    for (const v of stats.vcpus) this.#vcpuSeconds.inc({ sandbox_id: sandbox, vcpu: String(v.index) }, sample(v.cpuTimeNs) / NS_PER_SECOND);
    for (const p of stats.processes) {
      const labels = { pid: String(p.pid), role: p.role };
      set(this.#rss, labels, sample(p.rssBytes));
      set(this.#pss, labels, sample(p.pssBytes));
    }
    set(this.#bootMemory, {}, sample(stats.memory.bootBytes));
    set(this.#pluggedMemory, {}, sample(stats.memory.pluggedBytes));
    if (stats.memory.balloon) set(this.#balloonActual, {}, sample(stats.memory.balloon.actualBytes));
    for (const d of stats.disks) {
      const labels = { device: d.id };
      count(this.#diskReadBytes, labels, d.readBytes);
      count(this.#diskWrittenBytes, labels, d.writeBytes);
      count(this.#diskReads, labels, d.readOperations);
      count(this.#diskWrites, labels, d.writeOperations);
      count(this.#diskFlushes, labels, d.flushOperations);
    }
    for (const n of stats.nics) {
      const labels = { device: n.id, tap: n.tap };
      count(this.#nicReceivedBytes, labels, n.rxBytes);
      count(this.#nicTransmittedBytes, labels, n.txBytes);
      count(this.#nicReceivedPackets, labels, n.rxPackets);
      count(this.#nicTransmittedPackets, labels, n.txPackets);
    }
  }

  #gauge(name: string, help: string, labels: string[]): Gauge {
    const gauge = new Gauge({ name, help, labelNames: ['sandbox_id', ...labels], registers: [this.registry] });
    this.#gauges.push(gauge);
    return gauge;
  }

  /** A counter whose value is the library's (reset, then set by one inc each scrape). */
  #counter(name: string, help: string, labels: string[]): Counter {
    const counter = new Counter({ name, help, labelNames: ['sandbox_id', ...labels], registers: [this.registry] });
    this.#counters.push(counter);
    return counter;
  }
}

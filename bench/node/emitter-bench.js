'use strict';
// Times the original numbat-emitter (tests/interop/node/node_modules) for bench/emitter.py.
//
//   node emitter-bench.js calls PORT N REPEATS
//     N metric() calls per repeat, each repeat on a fresh emitter; prints
//     {"us_per_call": [...], "discarded": [...]} and exits.
//   node emitter-bench.js burst PORT N
//     one burst of N metric() calls, waits until the emitter's buffers are empty, prints
//     {"calls_s", "drain_s", "discarded", "peak_backlog_events", "peak_buffered_bytes",
//      "rss_before", "max_rss"}, then stays alive (its socket is unref'd) until stdin
//     closes, so the parent can wait for the data.
//     peak_backlog_events: events waiting as objects (the discard-stream backlog, which
//     discards beyond `maxbacklog`, plus the object-mode stream buffers);
//     peak_buffered_bytes: JSON waiting in the stringify stream and the socket. Both are
//     sampled every 1,000 calls and once after the loop.

const path = require('path');

const Emitter = require(path.resolve(__dirname, '../../tests/interop/node/node_modules/numbat-emitter'));

const [mode, portArg, nArg, repeatsArg] = process.argv.slice(2);
const port = Number(portArg);
const n = Number(nArg);
const repeats = Number(repeatsArg || 1);

// The emitter unrefs its socket; keep the process alive while we work.
const keepAlive = setInterval(() => {}, 1000);

function sleep(ms) { return new Promise((resolve) => setTimeout(resolve, ms)); }

function connect() {
	const emitter = new Emitter({ uri: 'tcp://127.0.0.1:' + port, app: 'bench' });
	const state = { emitter, discarded: 0 };
	emitter.input.on('discard', () => { state.discarded++; });
	return new Promise((resolve, reject) => {
		const timer = setTimeout(() => reject(new Error('numbat-emitter never became ready')), 10000);
		emitter.once('ready', () => { clearTimeout(timer); resolve(state); });
	});
}

// True once nothing is buffered in the emitter's streams or the socket.
function drained(emitter) {
	const input = emitter.input._readableState.length;
	const output = emitter.output._readableState.length + emitter.output._writableState.length;
	const socket = emitter.client ? emitter.client.writableLength : 0;
	return input === 0 && output === 0 && socket === 0 && emitter.input._backlog.length === 0;
}

async function waitDrained(emitter, timeoutMs) {
	const deadline = Date.now() + timeoutMs;
	while (!drained(emitter) && Date.now() < deadline) await sleep(5);
}

function burst(emitter) {
	const t0 = process.hrtime.bigint();
	for (let i = 0; i < n; i++) emitter.metric({ name: 'x', value: i });
	return Number(process.hrtime.bigint() - t0);
}

// Events queued as objects, and bytes of JSON buffered behind them.
function queuedEvents(emitter) {
	return emitter.input._backlog.length + emitter.input._readableState.length +
		emitter.output._writableState.length;
}

function bufferedBytes(emitter) {
	return emitter.output._readableState.length + (emitter.client ? emitter.client.writableLength : 0);
}

// burst(), sampling the backlog every 1,000 calls (as bench/emitter.py does for ours).
function sampledBurst(emitter) {
	let peakEvents = 0;
	let peakBytes = 0;
	const sample = () => {
		peakEvents = Math.max(peakEvents, queuedEvents(emitter));
		peakBytes = Math.max(peakBytes, bufferedBytes(emitter));
	};
	const t0 = process.hrtime.bigint();
	for (let i = 0; i < n; i++) {
		emitter.metric({ name: 'x', value: i });
		if (i % 1000 === 0) sample();
	}
	const ns = Number(process.hrtime.bigint() - t0);
	sample();
	return { ns, peakEvents, peakBytes };
}

async function calls() {
	const usPerCall = [];
	const discarded = [];
	for (let r = 0; r < repeats; r++) {
		const state = await connect();
		const ns = burst(state.emitter);
		usPerCall.push(ns / n / 1000);
		await waitDrained(state.emitter, 60000);
		discarded.push(state.discarded);
		state.emitter.destroy();
	}
	process.stdout.write(JSON.stringify({ us_per_call: usPerCall, discarded }) + '\n');
	clearInterval(keepAlive);
}

async function oneBurst() {
	const state = await connect();
	const rssBefore = process.memoryUsage().rss;
	const t0 = process.hrtime.bigint();
	const { ns, peakEvents, peakBytes } = sampledBurst(state.emitter);
	await waitDrained(state.emitter, 120000);
	const drainS = Number(process.hrtime.bigint() - t0) / 1e9;
	process.stdout.write(JSON.stringify({
		calls_s: ns / 1e9,
		drain_s: drainS,
		discarded: state.discarded,
		peak_backlog_events: peakEvents,
		peak_buffered_bytes: peakBytes,
		rss_before: rssBefore,
		max_rss: process.resourceUsage().maxRSS * 1024,
	}) + '\n');
	process.stdin.resume();
	process.stdin.on('end', () => { state.emitter.destroy(); clearInterval(keepAlive); });
}

(mode === 'calls' ? calls() : oneBurst()).catch((err) => {
	process.stderr.write(String(err && err.stack || err) + '\n');
	process.exit(1);
});

'use strict';
// Sends events with the original numbat-emitter (tests/interop/node/node_modules) for
// tests/interop/test_node_to_collector.py.
//
//   node emit-events.js URI N RUN
//     waits for the emitter's `ready`, calls metric({name: 'event', seq: i, run: RUN,
//     value: i / 2}) for i in 0..N-1, waits until nothing is left in the emitter's
//     streams or its socket, prints {"sent": N, "discarded": D} and exits 0.
//     Exits 1 (with the reason on stderr) if the emitter never becomes ready or never
//     drains within 20 s.

const path = require('path');

const Emitter = require(path.join(__dirname, 'node', 'node_modules', 'numbat-emitter'));

const [uri, nArg, run] = process.argv.slice(2);
const n = Number(nArg);
const TIMEOUT_MS = 20000;

// The emitter may unref its socket; keep the process alive while we work.
const keepAlive = setInterval(() => {}, 1000);

function sleep(ms) { return new Promise((resolve) => setTimeout(resolve, ms)); }

function fail(message) {
	process.stderr.write(message + '\n');
	process.exit(1);
}

function writableLength(stream) {
	return stream && stream._writableState ? stream._writableState.length : 0;
}

// True once nothing is buffered in the emitter's streams or its client.
function drained(emitter) {
	const input = emitter.input._readableState.length + emitter.input._backlog.length;
	const output = emitter.output._readableState.length + writableLength(emitter.output);
	return input === 0 && output === 0 && writableLength(emitter.client) === 0;
}

async function main() {
	const emitter = new Emitter({ uri, app: 'interop', node: 'n1', maxbacklog: n + 100 });
	let discarded = 0;
	emitter.input.on('discard', () => { discarded++; });
	await new Promise((resolve) => {
		const timer = setTimeout(() => fail('numbat-emitter never became ready for ' + uri), TIMEOUT_MS);
		emitter.once('ready', () => { clearTimeout(timer); resolve(); });
	});
	for (let i = 0; i < n; i++) emitter.metric({ name: 'event', seq: i, run, value: i / 2 });
	const deadline = Date.now() + TIMEOUT_MS;
	while (!drained(emitter)) {
		if (Date.now() > deadline) fail('numbat-emitter did not drain to ' + uri);
		await sleep(5);
	}
	process.stdout.write(JSON.stringify({ sent: n, discarded }) + '\n');
	clearInterval(keepAlive);
	// Give the last writes a moment to leave the socket before the process goes away.
	await sleep(50);
	process.exit(0);
}

main().catch((err) => fail(String(err && err.stack || err)));

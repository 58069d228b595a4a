// Package pvesim is an in-process, stateful Proxmox VE API simulator for tests.
//
// Every request it receives is checked against the official Proxmox VE API
// schema (pve-api-schema-9.1.json, read at run time from ../shared/proxmox/
// beside the module, or from $PVESIM_SCHEMA; it is never copied into this
// repository): the path must match a schema path template, the method must
// exist, and every parameter must be declared and valid for its type, format,
// enum, range, length and pattern. A request that is not valid gets the answer
// the real API gives (400 "Parameter verification failed." with a per
// parameter "errors" object, 501 "Method 'GET /x' not implemented") and is
// recorded as a violation: a provider test asserts that Violations is empty.
//
// Behind the checks sits a small model of one Proxmox VE host (or several
// nodes): storages and their volumes, the node network with pending changes,
// the cluster and guest firewall, QEMU VMs and LXC containers with locks, and
// asynchronous tasks with real UPIDs. Faults (latency, 5xx answers, failed
// tasks, dropped connections) can be injected at run time.
//
// Usage in a test:
//
//	srv := pvesim.Start(t, pvesim.Options{TimeScale: 0.01})
//	// point the client at srv.URL with srv.TokenID/srv.TokenSecret, trusting
//	// srv.CAPEM or pinning srv.Fingerprint; then at the end:
//	for _, v := range srv.Violations() {
//		t.Errorf("request not valid per the PVE 9.1 schema: %s", v)
//	}
//
// Faults: FailNext (5xx on matching calls), FailNextTask (a task ends with an
// error exit status), DropNext (connection closed without an answer),
// SetCallLatency and SetTaskLatency (scaled by SetTimeScale). Observation:
// Calls, CallCount, CallCounts (per "METHOD /path/{template}") and Snapshot.
// Out-of-band changes (for example a snippet copied over SSH): AddVolume.
package pvesim

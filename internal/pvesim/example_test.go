package pvesim_test

import (
	"fmt"
	"net/http"
	"time"

	"github.com/homelab-dev/homelab/internal/pvesim"
)

// A test starts a simulator (pvesim.Start skips the test when the schema is
// missing), talks to it over verified TLS with a token, injects faults, and
// ends by asserting that no request broke the schema. (Not run by go test:
// it needs the schema, which tests find through pvesim.Start.)
func Example() {
	srv, err := pvesim.NewServer(pvesim.Options{
		TaskLatency: map[string]time.Duration{"qmcreate": 2 * time.Second, "download": 20 * time.Second},
		TimeScale:   0.001, // 2s becomes 2ms
	})
	if err != nil {
		fmt.Println(err) // the schema is missing: it says where it is expected
		return
	}
	defer srv.Close()
	srv.FailNextTask("download", "download failed: 404 Not Found")

	rq, _ := http.NewRequest("GET", srv.URL+"/cluster/nextid", nil)
	rq.Header.Set("Authorization", srv.AuthHeader()) // PVEAPIToken=root@pam!pvesim=...
	resp, err := srv.Client().Do(rq)                 // trusts srv.CAPEM only; srv.Fingerprint for pinning
	if err != nil {
		fmt.Println(err)
		return
	}
	resp.Body.Close()
	fmt.Println(resp.Status, len(srv.Violations()), srv.CallCounts()["GET /cluster/nextid"])
	// With the schema present this prints: 200 OK 0 1
}

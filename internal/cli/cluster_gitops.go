package cli

import (
	"context"
	"fmt"
	"io"
)

// runGitops is apply's gitops phase: the lab's repository built
// (secrets encrypted with SOPS), pushed to the manager's Git server
// through the same dialer as the cluster phase, then Flux bootstrapped
// from it. A stand-in cluster cannot run Flux: the phase says so.
func runGitops(_ context.Context, w io.Writer, lc *labContext, cl *clusterRun) error {
	fmt.Fprintf(w, "gitops: pushing the repository and bootstrapping Flux is not wired into apply yet (step pushRepository); run homelab gitops init and homelab gitops bootstrap -f %s\n", lc.File)
	if cl.res != nil && cl.res.Standin {
		fmt.Fprintln(w, "gitops: Flux is not installed: the cluster is made of homelab stand-ins, which run no Kubernetes")
	}
	return nil
}

package main

import (
	"context"
	"os"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/homelab-dev/homelab/internal/cli"
)

func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"homelab": func() {
			os.Exit(cli.Run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
		},
	})
}

// TestScripts runs the command-line scenarios in testdata/script: each is
// a txtar archive of commands and expected output (see testscript docs).
func TestScripts(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir: "testdata/script",
		Setup: func(env *testscript.Env) error {
			// Keep the age identity inside the test's own folder tree but
			// outside the lab folder, as in real use.
			env.Setenv("HOMELAB_IDENTITY", env.WorkDir+"/../identity.txt")
			env.Setenv("XDG_CONFIG_HOME", env.WorkDir+"/../config")
			return nil
		},
	})
}

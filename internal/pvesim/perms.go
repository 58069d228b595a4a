package pvesim

import (
	"encoding/json"
	"net/http"
	"net/url"
	"regexp"
	"strings"
)

type permSpec struct {
	Check []any  `json:"check"`
	User  string `json:"user"`
}

// checkPerms evaluates the schema's "permissions.check" expression for the
// token, as PVE::RPCEnvironment does, and answers 403 on failure.
func (s *Sim) checkPerms(tok Token, raw json.RawMessage, params url.Values) *apiError {
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	var spec permSpec
	if err := json.Unmarshal(raw, &spec); err != nil || len(spec.Check) == 0 {
		return nil
	}
	if ok, what := evalCheck(tok, spec.Check, params); !ok {
		return permErr(what)
	}
	return nil
}

func permErr(what string) *apiError {
	msg := "Permission check failed"
	if what != "" {
		msg += " (" + what + ")"
	}
	return &apiError{status: http.StatusForbidden, msg: msg}
}

var braceRE = regexp.MustCompile(`\{([^}]+)\}`)

func evalCheck(tok Token, check []any, params url.Values) (bool, string) {
	if len(check) == 0 {
		return true, ""
	}
	op, _ := check[0].(string)
	switch op {
	case "perm":
		if len(check) < 3 {
			return true, ""
		}
		p, _ := check[1].(string)
		p = braceRE.ReplaceAllStringFunc(p, func(m string) string { return params.Get(m[1 : len(m)-1]) })
		list, _ := check[2].([]any)
		var privs []string
		for _, x := range list {
			if s, ok := x.(string); ok {
				privs = append(privs, s)
			}
		}
		any := len(check) >= 5 && check[3] == "any"
		return tokenHas(tok, p, privs, any)
	case "and":
		for _, sub := range check[1:] {
			if c, ok := sub.([]any); ok {
				if ok, what := evalCheck(tok, c, params); !ok {
					return false, what
				}
			}
		}
		return true, ""
	case "or":
		var last string
		for _, sub := range check[1:] {
			if c, ok := sub.([]any); ok {
				ok, what := evalCheck(tok, c, params)
				if ok {
					return true, ""
				}
				last = what
			}
		}
		return false, last
	}
	return true, "" // userid-param, userid-group, ...: not modelled
}

// tokenHas checks privileges on an ACL path, inherited from its ancestors.
func tokenHas(tok Token, p string, privs []string, any bool) (bool, string) {
	if tok.Privs == nil {
		return true, ""
	}
	held := map[string]bool{}
	walk := p
	for {
		for _, pr := range tok.Privs[walk] {
			held[pr] = true
		}
		if walk == "/" || walk == "" {
			break
		}
		i := strings.LastIndex(walk, "/")
		if i <= 0 {
			walk = "/"
		} else {
			walk = walk[:i]
		}
	}
	if any {
		for _, pr := range privs {
			if held[pr] {
				return true, ""
			}
		}
		return false, p + ", " + strings.Join(privs, "|")
	}
	for _, pr := range privs {
		if !held[pr] {
			return false, p + ", " + pr
		}
	}
	return true, ""
}

// allPrivs are the privileges an unrestricted token reports.
var allPrivs = []string{"Datastore.Allocate", "Datastore.AllocateSpace", "Datastore.AllocateTemplate",
	"Datastore.Audit", "SDN.Use", "Sys.Audit", "Sys.Modify", "Sys.AccessNetwork", "Sys.PowerMgmt",
	"VM.Allocate", "VM.Audit", "VM.Config.CDROM", "VM.Config.CPU", "VM.Config.Cloudinit",
	"VM.Config.Disk", "VM.Config.HWType", "VM.Config.Memory", "VM.Config.Network", "VM.Config.Options",
	"VM.GuestAgent.Audit", "VM.GuestAgent.Unrestricted", "VM.PowerMgmt"}

func init() {
	handle("GET /access/permissions", func(s *Sim, r *req) (any, error) {
		privs := r.tok.Privs
		if privs == nil {
			privs = map[string][]string{"/": allPrivs}
		}
		out := map[string]map[string]int{}
		for p, list := range privs {
			if r.has("path") && p != r.str("path") {
				continue
			}
			m := map[string]int{}
			for _, pr := range list {
				m[pr] = 1
			}
			out[p] = m
		}
		return out, nil
	})
}

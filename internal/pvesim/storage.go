package pvesim

import (
	"maps"
	"net/http"
	"path"
	"slices"
	"strings"
)

// contentDir is where a file storage keeps each content type.
var contentDir = map[string]string{"iso": "iso", "vztmpl": "vztmpl", "import": "import", "snippets": "snippets", "backup": "dump"}

// DefaultDownloadSize is the size given to volumes created by download-url.
const DefaultDownloadSize = 1 << 30

// AddVolume puts a volume on a storage, as if uploaded out of band.
func (s *Sim) AddVolume(v Volume) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if v.CTime == 0 {
		v.CTime = s.now().Unix()
	}
	if v.Format == "" {
		v.Format = formatOf(v.VolID, v.Content)
	}
	s.st.Volumes[v.VolID] = &v
}

func formatOf(volid, content string) string {
	switch content {
	case "iso":
		return "iso"
	case "vztmpl":
		if strings.HasSuffix(volid, ".tar.xz") {
			return "txz"
		}
		return "tzst"
	case "snippets":
		return "snippet"
	case "images", "rootdir":
		return "raw"
	}
	ext := strings.TrimPrefix(path.Ext(volid), ".")
	if ext == "" {
		return "raw"
	}
	return ext
}

func (s *Sim) volumeEntry(v *Volume) map[string]any {
	e := map[string]any{"volid": v.VolID, "content": v.Content, "format": v.Format, "size": v.Size, "ctime": v.CTime}
	if v.VMID != 0 {
		e["vmid"] = v.VMID
	}
	return e
}

// volumeExists reports whether a volume ID names an existing volume.
func (s *Sim) volumeExists(volid string) bool { return s.st.Volumes[volid] != nil }

func init() {
	handle("GET /nodes/{node}/storage", func(s *Sim, r *req) (any, error) {
		out := []map[string]any{}
		for _, sc := range s.st.Storages {
			if r.has("storage") && r.str("storage") != sc.ID {
				continue
			}
			if r.has("content") {
				ok := false
				for _, c := range splitRE.Split(r.str("content"), -1) {
					ok = ok || sc.supports(c)
				}
				if !ok {
					continue
				}
			}
			if ok, _ := tokenHas(r.tok, "/storage/"+sc.ID, []string{"Datastore.Audit", "Datastore.AllocateSpace"}, true); !ok {
				continue
			}
			used := s.st.used(sc.ID)
			out = append(out, map[string]any{
				"storage": sc.ID, "type": sc.Type, "content": strings.Join(sc.Content, ","),
				"active": 1, "enabled": 1, "shared": 0, "total": sc.Total, "used": used, "avail": sc.Total - used,
				"used_fraction": float64(used) / float64(max(sc.Total, 1)),
			})
		}
		return out, nil
	})
	handle("GET /nodes/{node}/storage/{storage}", func(s *Sim, r *req) (any, error) {
		return []map[string]any{{"subdir": "content"}, {"subdir": "download-url"}, {"subdir": "status"}}, nil
	})
	handle("GET /nodes/{node}/storage/{storage}/status", func(s *Sim, r *req) (any, error) {
		sc := s.st.storage(r.str("storage"))
		used := s.st.used(sc.ID)
		return map[string]any{"storage": sc.ID, "type": sc.Type, "content": strings.Join(sc.Content, ","),
			"active": 1, "enabled": 1, "shared": 0, "total": sc.Total, "used": used, "avail": sc.Total - used}, nil
	})
	handle("GET /nodes/{node}/storage/{storage}/content", func(s *Sim, r *req) (any, error) {
		sid := r.str("storage")
		out := []map[string]any{}
		for _, id := range slices.Sorted(maps.Keys(s.st.Volumes)) {
			v := s.st.Volumes[id]
			if !strings.HasPrefix(id, sid+":") {
				continue
			}
			if r.has("content") && v.Content != r.str("content") {
				continue
			}
			if r.has("vmid") && v.VMID != r.int("vmid") {
				continue
			}
			out = append(out, s.volumeEntry(v))
		}
		return out, nil
	})
	volumeOf := func(s *Sim, r *req) (*Volume, error) {
		vol := r.str("volume")
		if !strings.Contains(vol, ":") && r.has("storage") {
			vol = r.str("storage") + ":" + vol
		}
		v := s.st.Volumes[vol]
		if v == nil {
			return nil, errf(500, "volume '%s' does not exist", vol)
		}
		return v, nil
	}
	handle("GET /nodes/{node}/storage/{storage}/content/{volume}", func(s *Sim, r *req) (any, error) {
		v, err := volumeOf(s, r)
		if err != nil {
			return nil, err
		}
		return map[string]any{"path": "/var/lib/vz/" + v.VolID, "size": v.Size, "used": v.Size, "format": v.Format}, nil
	})
	handle("DELETE /nodes/{node}/storage/{storage}/content/{volume}", func(s *Sim, r *req) (any, error) {
		v, err := volumeOf(s, r)
		if err != nil {
			return nil, err
		}
		sid, _, _ := strings.Cut(v.VolID, ":")
		if err := r.perm("/storage/"+sid, "Datastore.Allocate"); err != nil {
			return nil, err
		}
		if v.VMID != 0 && s.st.Guests[v.VMID] != nil && s.guestUses(s.st.Guests[v.VMID], v.VolID) {
			return nil, errf(500, "volume '%s' is in use by VM %d", v.VolID, v.VMID)
		}
		volid := v.VolID
		return s.startTask(r.str("node"), "imgdel", volid, r.user, func(failed string) error {
			if failed == "" {
				delete(s.st.Volumes, volid)
			}
			return nil
		}), nil
	})
	handle("POST /nodes/{node}/storage/{storage}/download-url", func(s *Sim, r *req) (any, error) {
		sc := s.st.storage(r.str("storage"))
		content := r.str("content")
		if !sc.supports(content) {
			return nil, errf(500, "storage '%s' is not configured for content-type '%s'", sc.ID, content)
		}
		volid := sc.ID + ":" + contentDir[content] + "/" + r.str("filename")
		if s.volumeExists(volid) {
			return nil, errf(500, "refusing to override existing file '/var/lib/vz/template/%s/%s'", contentDir[content], r.str("filename"))
		}
		node := r.str("node")
		return s.startTask(node, "download", r.str("filename"), r.user, func(failed string) error {
			if failed != "" {
				return nil
			}
			s.st.Volumes[volid] = &Volume{VolID: volid, Content: content, Format: formatOf(volid, content),
				Size: DefaultDownloadSize, CTime: s.now().Unix()}
			return nil
		}), nil
	})
	handle("POST /nodes/{node}/storage/{storage}/upload", func(s *Sim, r *req) (any, error) {
		sc := s.st.storage(r.str("storage"))
		content := r.str("content")
		if r.upload == nil {
			return nil, errf(500, "upload without a file")
		}
		if !sc.supports(content) {
			return nil, errf(500, "storage '%s' is not configured for content-type '%s'", sc.ID, content)
		}
		volid := sc.ID + ":" + contentDir[content] + "/" + r.str("filename")
		data := r.upload.data
		return s.startTask(r.str("node"), "imgcopy", "", r.user, func(failed string) error {
			if failed == "" {
				s.st.Volumes[volid] = &Volume{VolID: volid, Content: content, Format: formatOf(volid, content),
					Size: int64(len(data)), CTime: s.now().Unix(), Data: data}
			}
			return nil
		}), nil
	})
	handle("GET /nodes/{node}/aplinfo", func(s *Sim, r *req) (any, error) {
		out := []map[string]any{}
		for _, t := range s.st.templates {
			os, _, _ := strings.Cut(t, "-")
			out = append(out, map[string]any{
				"template": t, "package": strings.SplitN(t, "_", 2)[0], "os": os, "section": "system",
				"type": "lxc", "headline": t, "version": strings.SplitN(t, "_", 3)[1],
				"source": "http://download.proxmox.com/images/system/" + t, "location": "http://download.proxmox.com/images/system/" + t,
			})
		}
		return out, nil
	})
	handle("POST /nodes/{node}/aplinfo", func(s *Sim, r *req) (any, error) {
		sc := s.st.storage(r.str("storage"))
		tmpl := r.str("template")
		if !slices.Contains(s.st.templates, tmpl) {
			return nil, &apiError{status: http.StatusBadRequest, msg: "Parameter verification failed.", errors: map[string]string{"template": "no such template"}}
		}
		if !sc.supports("vztmpl") {
			return nil, errf(500, "storage '%s' does not support templates", sc.ID)
		}
		volid := sc.ID + ":vztmpl/" + tmpl
		return s.startTask(r.str("node"), "download", tmpl, r.user, func(failed string) error {
			if failed == "" {
				s.st.Volumes[volid] = &Volume{VolID: volid, Content: "vztmpl", Format: formatOf(volid, "vztmpl"), Size: 128 << 20, CTime: s.now().Unix()}
			}
			return nil
		}), nil
	})
}

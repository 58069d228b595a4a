package gitrepo

import (
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/homelab-dev/homelab/internal/render"
)

// ID is a SHA-1 object id.
type ID [sha1.Size]byte

// ZeroID is the id git uses for "no object" (an absent ref).
var ZeroID ID

func (id ID) String() string { return hex.EncodeToString(id[:]) }

// IsZero reports whether id is ZeroID.
func (id ID) IsZero() bool { return id == ZeroID }

// ParseID reads a 40-digit lowercase hexadecimal object id.
func ParseID(s string) (ID, error) {
	var id ID
	if len(s) != 2*len(id) || strings.ToLower(s) != s {
		return id, fmt.Errorf("%q is not a 40-digit object id", s)
	}
	if _, err := hex.Decode(id[:], []byte(s)); err != nil {
		return id, fmt.Errorf("%q is not a 40-digit object id", s)
	}
	return id, nil
}

// Object types, numbered as in packfiles.
const (
	typeCommit = 1
	typeTree   = 2
	typeBlob   = 3
)

var typeNames = map[int]string{typeCommit: "commit", typeTree: "tree", typeBlob: "blob"}

// object is one git object: its type and content (without the header).
type object struct {
	typ  int
	data []byte
}

// id is the object's name: SHA-1 of "<type> <size>\0<content>".
func (o object) id() ID {
	h := sha1.New()
	fmt.Fprintf(h, "%s %d\x00", typeNames[o.typ], len(o.data))
	h.Write(o.data)
	var id ID
	h.Sum(id[:0])
	return id
}

// Snapshot is the objects of one tree built from artifacts.
type Snapshot struct {
	// Tree is the root tree's id.
	Tree    ID
	objects []object
	seen    map[ID]bool
}

func (s *Snapshot) add(o object) ID {
	id := o.id()
	if !s.seen[id] {
		s.seen[id] = true
		s.objects = append(s.objects, o)
	}
	return id
}

// dirNode is a folder while the tree is built.
type dirNode struct {
	files map[string][]byte
	dirs  map[string]*dirNode
}

// BuildTree turns artifacts into blobs and trees, as git would store a
// working tree holding exactly those files (mode 100644). It refuses
// secret artifacts (a repository is no place for them), unclean or
// duplicate paths, and a path that is both a file and a folder.
func BuildTree(arts []render.Artifact) (*Snapshot, error) {
	root := &dirNode{files: map[string][]byte{}, dirs: map[string]*dirNode{}}
	for _, a := range arts {
		if a.Secret {
			return nil, fmt.Errorf("building the repository tree: %s is secret; secrets never go into git", a.Path)
		}
		p := a.Path
		if p == "" || path.IsAbs(p) || path.Clean(p) != p || strings.HasPrefix(p, "../") || p == ".." || p == "." || strings.ContainsAny(p, "\\\x00") {
			return nil, fmt.Errorf("building the repository tree: path %q is not a clean relative path", p)
		}
		parts := strings.Split(p, "/")
		d := root
		for i, el := range parts {
			if el == ".git" {
				return nil, fmt.Errorf("building the repository tree: path %q names a .git folder", p)
			}
			last := i == len(parts)-1
			_, isFile := d.files[el]
			_, isDir := d.dirs[el]
			switch {
			case last && (isFile || isDir):
				return nil, fmt.Errorf("building the repository tree: two artifacts named %s", p)
			case last:
				d.files[el] = a.Data
			case isFile:
				return nil, fmt.Errorf("building the repository tree: %s is both a file and a folder", strings.Join(parts[:i+1], "/"))
			default:
				if !isDir {
					d.dirs[el] = &dirNode{files: map[string][]byte{}, dirs: map[string]*dirNode{}}
				}
				d = d.dirs[el]
			}
		}
	}
	s := &Snapshot{seen: map[ID]bool{}}
	s.Tree = s.writeTree(root)
	return s, nil
}

// writeTree stores a folder's tree object, children first. Entries are
// sorted as git sorts them: by name, a folder's name compared as if it
// ended with "/".
func (s *Snapshot) writeTree(d *dirNode) ID {
	type entry struct {
		mode, name, key string
		id              ID
	}
	var es []entry
	for name, data := range d.files {
		es = append(es, entry{"100644", name, name, s.add(object{typeBlob, data})})
	}
	for name, sub := range d.dirs {
		es = append(es, entry{"40000", name, name + "/", s.writeTree(sub)})
	}
	slices.SortFunc(es, func(a, b entry) int { return strings.Compare(a.key, b.key) })
	var buf []byte
	for _, e := range es {
		buf = append(buf, e.mode...)
		buf = append(buf, ' ')
		buf = append(buf, e.name...)
		buf = append(buf, 0)
		buf = append(buf, e.id[:]...)
	}
	return s.add(object{typeTree, buf})
}

// Signature is a commit's author or committer.
type Signature struct {
	Name, Email string
	When        time.Time
}

func (s Signature) String() string {
	_, off := s.When.Zone()
	sign := '+'
	if off < 0 {
		sign, off = '-', -off
	}
	return fmt.Sprintf("%s <%s> %d %c%02d%02d", s.Name, s.Email, s.When.Unix(), sign, off/3600, off/60%60)
}

// commit stores a commit object of the snapshot's tree and returns its id.
func (s *Snapshot) commit(parent ID, author Signature, msg string) ID {
	var b strings.Builder
	b.WriteString("tree " + s.Tree.String() + "\n")
	if !parent.IsZero() {
		b.WriteString("parent " + parent.String() + "\n")
	}
	b.WriteString("author " + author.String() + "\n")
	b.WriteString("committer " + author.String() + "\n\n")
	b.WriteString(strings.TrimRight(msg, "\n") + "\n")
	return s.add(object{typeCommit, []byte(b.String())})
}

// cleanSignaturePart keeps a name or e-mail from breaking the commit
// header (git refuses <, > and newlines there).
func cleanSignaturePart(s string) string {
	s = strings.Map(func(r rune) rune {
		switch r {
		case '<', '>', '\n', '\r', 0:
			return -1
		}
		return r
	}, s)
	return strings.TrimSpace(s)
}

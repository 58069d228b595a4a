package sops

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"filippo.io/age"
	"filippo.io/age/armor"
	"go.yaml.in/yaml/v4"
)

const (
	// KubernetesRegex selects the values of a Kubernetes Secret (data and
	// stringData), as Flux's guide and homelab's .sops.yaml use it.
	KubernetesRegex = `^(data|stringData)$`
	// FormatVersion is written as sops.version: the sops release whose
	// file layout Encrypt writes (empty key lists left out, as from sops
	// 3.10). sops reads the field but does not act on it.
	FormatVersion = "3.10.2"

	metadataKey              = "sops"
	defaultUnencryptedSuffix = "_unencrypted"
	dataKeySize              = 32
)

// ErrMAC is the error of Decrypt when the values do not match the file's
// MAC: something was changed (a value in the clear, an order, a deleted
// key) without sops.
var ErrMAC = errors.New("the values do not match the file's MAC: the file was changed after it was encrypted")

// AgeKey is one age recipient of a file, with the data key encrypted to
// it (armored).
type AgeKey struct {
	Recipient string `yaml:"recipient"`
	Enc       string `yaml:"enc"`
}

// Metadata is a file's sops key.
type Metadata struct {
	Age               []AgeKey
	LastModified      time.Time
	MAC               string
	EncryptedRegex    string
	UnencryptedRegex  string
	EncryptedSuffix   string
	UnencryptedSuffix string
	MACOnlyEncrypted  bool
	Version           string
}

// Recipients lists the age recipients of the file, in file order.
func (m *Metadata) Recipients() []string {
	var r []string
	for _, k := range m.Age {
		r = append(r, k.Recipient)
	}
	return r
}

// metadataYAML is the sops key as written; the fields of the key types
// homelab does not support are read to say so.
type metadataYAML struct {
	ShamirThreshold         int         `yaml:"shamir_threshold"`
	KeyGroups               []keyGroup  `yaml:"key_groups"`
	KMS                     []yaml.Node `yaml:"kms"`
	GCPKMS                  []yaml.Node `yaml:"gcp_kms"`
	AzureKV                 []yaml.Node `yaml:"azure_kv"`
	HCVault                 []yaml.Node `yaml:"hc_vault"`
	Age                     []AgeKey    `yaml:"age"`
	LastModified            string      `yaml:"lastmodified"`
	MAC                     string      `yaml:"mac"`
	PGP                     []yaml.Node `yaml:"pgp"`
	UnencryptedSuffix       string      `yaml:"unencrypted_suffix"`
	EncryptedSuffix         string      `yaml:"encrypted_suffix"`
	UnencryptedRegex        string      `yaml:"unencrypted_regex"`
	EncryptedRegex          string      `yaml:"encrypted_regex"`
	UnencryptedCommentRegex string      `yaml:"unencrypted_comment_regex"`
	EncryptedCommentRegex   string      `yaml:"encrypted_comment_regex"`
	MACOnlyEncrypted        bool        `yaml:"mac_only_encrypted"`
	Version                 string      `yaml:"version"`
}

type keyGroup struct {
	Age []AgeKey    `yaml:"age"`
	PGP []yaml.Node `yaml:"pgp"`
}

// file is a parsed sops YAML file: its documents (the sops key removed)
// and the metadata of the first document.
type file struct {
	docs []*yaml.Node // document roots: mappings, or nil for empty documents
	meta *Metadata
	rule rule
}

// maxDocs bounds the documents of one file.
const maxDocs = 1000

// parseDocs reads every document of a YAML stream. Empty documents give a
// nil root; documents that are not mappings are errors.
func parseDocs(data []byte) ([]*yaml.Node, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var docs []*yaml.Node
	for {
		var doc yaml.Node
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("not YAML: %w", redactYAMLError(err))
		}
		if len(docs) == maxDocs {
			return nil, fmt.Errorf("more than %d documents", maxDocs)
		}
		var root *yaml.Node
		if len(doc.Content) == 1 {
			root = doc.Content[0]
		}
		switch {
		case root == nil:
		case root.Kind == yaml.ScalarNode && root.ShortTag() == "!!null":
			root = nil
		case root.Kind != yaml.MappingNode:
			return nil, fmt.Errorf("document %d is not a mapping", len(docs)+1)
		}
		docs = append(docs, root)
	}
	if len(docs) == 0 {
		return nil, errors.New("no YAML document")
	}
	return docs, nil
}

// redactYAMLError keeps the position of a YAML error and drops the rest:
// the parser may quote the text it stopped at, which can be a secret.
func redactYAMLError(err error) error {
	msg := err.Error()
	if i := strings.Index(msg, "line "); i >= 0 {
		end := i + len("line ")
		for end < len(msg) && msg[end] >= '0' && msg[end] <= '9' {
			end++
		}
		return errors.New("syntax error at " + msg[i:end])
	}
	return errors.New("syntax error")
}

// parseFile reads an encrypted file: documents, metadata, rule.
func parseFile(data []byte) (*file, error) {
	docs, err := parseDocs(data)
	if err != nil {
		return nil, err
	}
	f := &file{docs: docs}
	var metaNode *yaml.Node
	for i, root := range docs {
		if root == nil {
			continue
		}
		for j := 0; j+1 < len(root.Content); j += 2 {
			if k := root.Content[j]; k.Kind == yaml.ScalarNode && k.Value == metadataKey {
				if i == 0 {
					metaNode = root.Content[j+1]
				}
				root.Content = slices.Delete(root.Content, j, j+2)
				break
			}
		}
	}
	if metaNode == nil {
		return nil, errors.New("no sops metadata: the file is not encrypted with sops")
	}
	if f.meta, f.rule, err = parseMetadata(metaNode); err != nil {
		return nil, err
	}
	return f, nil
}

func parseMetadata(n *yaml.Node) (*Metadata, rule, error) {
	var m metadataYAML
	if err := n.Decode(&m); err != nil {
		return nil, rule{}, errors.New("the sops metadata is not what sops writes")
	}
	switch {
	case len(m.KeyGroups) > 1:
		return nil, rule{}, errors.New("the file splits its data key across key groups (Shamir): not supported")
	case len(m.KeyGroups) == 1 && len(m.Age) == 0:
		m.Age = m.KeyGroups[0].Age
	}
	if len(m.Age) == 0 {
		var others []string
		for name, l := range map[string]int{"pgp": len(m.PGP), "kms": len(m.KMS), "gcp_kms": len(m.GCPKMS), "azure_kv": len(m.AzureKV), "hc_vault": len(m.HCVault)} {
			if l > 0 {
				others = append(others, name)
			}
		}
		slices.Sort(others)
		if len(others) > 0 {
			return nil, rule{}, fmt.Errorf("the file has no age key (only %s, not supported)", strings.Join(others, ", "))
		}
		return nil, rule{}, errors.New("the file has no age key")
	}
	if m.UnencryptedCommentRegex != "" || m.EncryptedCommentRegex != "" {
		return nil, rule{}, errors.New("comment-based encryption rules are not supported")
	}
	lm, err := time.Parse(time.RFC3339, m.LastModified)
	if err != nil {
		return nil, rule{}, errors.New("sops.lastmodified is not an RFC 3339 time")
	}
	meta := &Metadata{
		Age: m.Age, LastModified: lm, MAC: m.MAC,
		EncryptedRegex: m.EncryptedRegex, UnencryptedRegex: m.UnencryptedRegex,
		EncryptedSuffix: m.EncryptedSuffix, UnencryptedSuffix: m.UnencryptedSuffix,
		MACOnlyEncrypted: m.MACOnlyEncrypted, Version: m.Version,
	}
	r, err := meta.rule()
	if err != nil {
		return nil, rule{}, err
	}
	return meta, r, nil
}

// rule says which values are encrypted, as sops decides it from the
// key path of a value.
type rule struct {
	encryptedRegex, unencryptedRegex   *regexp.Regexp
	encryptedSuffix, unencryptedSuffix string
}

func (m *Metadata) rule() (rule, error) {
	set := 0
	for _, s := range []string{m.EncryptedRegex, m.UnencryptedRegex, m.EncryptedSuffix, m.UnencryptedSuffix} {
		if s != "" {
			set++
		}
	}
	if set > 1 {
		return rule{}, errors.New("the sops metadata sets more than one of encrypted_regex, unencrypted_regex, encrypted_suffix, unencrypted_suffix")
	}
	r := rule{encryptedSuffix: m.EncryptedSuffix, unencryptedSuffix: m.UnencryptedSuffix}
	if set == 0 {
		r.unencryptedSuffix = defaultUnencryptedSuffix
	}
	var err error
	if m.EncryptedRegex != "" {
		if r.encryptedRegex, err = regexp.Compile(m.EncryptedRegex); err != nil {
			return rule{}, errors.New("sops.encrypted_regex is not a regular expression")
		}
	}
	if m.UnencryptedRegex != "" {
		if r.unencryptedRegex, err = regexp.Compile(m.UnencryptedRegex); err != nil {
			return rule{}, errors.New("sops.unencrypted_regex is not a regular expression")
		}
	}
	return r, nil
}

func (r rule) encrypts(path []string) bool {
	enc := true
	if r.unencryptedSuffix != "" && slices.ContainsFunc(path, func(k string) bool { return strings.HasSuffix(k, r.unencryptedSuffix) }) {
		enc = false
	}
	if r.encryptedSuffix != "" {
		enc = slices.ContainsFunc(path, func(k string) bool { return strings.HasSuffix(k, r.encryptedSuffix) })
	}
	if r.unencryptedRegex != nil && slices.ContainsFunc(path, r.unencryptedRegex.MatchString) {
		enc = false
	}
	if r.encryptedRegex != nil {
		enc = slices.ContainsFunc(path, r.encryptedRegex.MatchString)
	}
	return enc
}

// walk visits the scalar values under n in document order with their key
// paths, as sops walks its tree: a mapping adds its key to the path, a
// list adds nothing.
func walk(n *yaml.Node, path []string, fn func(v *yaml.Node, path []string) error) error {
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			if k.Kind != yaml.ScalarNode || k.ShortTag() != "!!str" {
				return fmt.Errorf("%s: a key is not a string (sops takes string keys only)", pathString(path))
			}
			if err := walk(n.Content[i+1], append(path[:len(path):len(path)], k.Value), fn); err != nil {
				return err
			}
		}
	case yaml.SequenceNode:
		for _, c := range n.Content {
			if err := walk(c, path, fn); err != nil {
				return err
			}
		}
	case yaml.ScalarNode:
		return fn(n, path)
	case yaml.AliasNode:
		return fmt.Errorf("%s: YAML aliases are not supported", pathString(path))
	default:
		return fmt.Errorf("%s: unexpected YAML node", pathString(path))
	}
	return nil
}

// pathString names a value in errors: its keys joined with dots.
func pathString(path []string) string {
	if len(path) == 0 {
		return "the document"
	}
	return strings.Join(path, ".")
}

// aad is the additional data of a value: its key path as sops joins it.
func aad(path []string) string { return strings.Join(path, ":") + ":" }

// plainValue is what sops makes of a scalar: its type name and the bytes
// it hashes and encrypts. A null gives typ "" (sops skips it).
func plainValue(n *yaml.Node, path []string) (typ string, b []byte, err error) {
	switch n.ShortTag() {
	case "!!null":
		return "", nil, nil
	case "!!str", "!!timestamp":
		return "str", []byte(n.Value), nil
	case "!!binary":
		b, err := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(n.Value), ""))
		if err != nil {
			return "", nil, fmt.Errorf("%s: a !!binary value is not base64", pathString(path))
		}
		return "str", b, nil
	case "!!bool":
		var v bool
		if err := n.Decode(&v); err != nil {
			return "", nil, fmt.Errorf("%s: not a boolean", pathString(path))
		}
		if v {
			return "bool", []byte("True"), nil
		}
		return "bool", []byte("False"), nil
	case "!!int":
		var v int64
		if err := n.Decode(&v); err != nil {
			return "", nil, fmt.Errorf("%s: an integer out of range", pathString(path))
		}
		return "int", []byte(strconv.FormatInt(v, 10)), nil
	case "!!float":
		var v float64
		if err := n.Decode(&v); err != nil {
			return "", nil, fmt.Errorf("%s: not a number", pathString(path))
		}
		return "float", []byte(strconv.FormatFloat(v, 'f', -1, 64)), nil
	}
	return "", nil, fmt.Errorf("%s: a value with an unsupported YAML tag", pathString(path))
}

// setPlain writes a decrypted value back into its node with its type.
func setPlain(n *yaml.Node, typ string, b []byte, path []string) error {
	n.Style = 0
	switch typ {
	case "str", "bytes":
		n.Tag, n.Value = "!!str", string(b)
		switch {
		case strings.Contains(n.Value, "\n"):
			n.Style = yaml.LiteralStyle
		case yaml11Bool(n.Value):
			// YAML 1.1 readers (sigs.k8s.io/yaml, kubectl) take these
			// for booleans; sops' encoder quotes them too.
			n.Style = yaml.DoubleQuotedStyle
		}
	case "int", "int64":
		if _, err := strconv.ParseInt(string(b), 10, 64); err != nil {
			return fmt.Errorf("%s: a value of type int is not an integer", pathString(path))
		}
		n.Tag, n.Value = "!!int", string(b)
	case "float":
		if _, err := strconv.ParseFloat(string(b), 64); err != nil {
			return fmt.Errorf("%s: a value of type float is not a number", pathString(path))
		}
		n.Tag, n.Value = "!!float", string(b)
	case "bool":
		v, err := strconv.ParseBool(string(b))
		if err != nil {
			return fmt.Errorf("%s: a value of type bool is not a boolean", pathString(path))
		}
		n.Tag, n.Value = "!!bool", strconv.FormatBool(v)
	default:
		return fmt.Errorf("%s: a value of type %s", pathString(path), typ)
	}
	return nil
}

// yaml11Bool says whether a YAML 1.1 reader takes a plain s for a boolean.
func yaml11Bool(s string) bool {
	switch strings.ToLower(s) {
	case "y", "yes", "n", "no", "on", "off", "true", "false":
		return s == strings.ToLower(s) || s == strings.ToUpper(s) || s == strings.ToUpper(s[:1])+s[1:]
	}
	return false
}

// macBytes is what the MAC hashes for a decrypted value of a type: sops
// hashes the Go value it decoded, printed again (a bool as True/False,
// numbers in their shortest form).
func macBytes(typ string, b []byte) []byte {
	switch typ {
	case "bool":
		if v, err := strconv.ParseBool(string(b)); err == nil {
			if v {
				return []byte("True")
			}
			return []byte("False")
		}
	case "int", "int64":
		if v, err := strconv.ParseInt(string(b), 10, 64); err == nil {
			return []byte(strconv.FormatInt(v, 10))
		}
	case "float":
		if v, err := strconv.ParseFloat(string(b), 64); err == nil {
			return []byte(strconv.FormatFloat(v, 'f', -1, 64))
		}
	}
	return b
}

// newMAC starts the MAC hash.
func newMAC(onlyEncrypted bool) hash.Hash {
	h := sha512.New()
	if onlyEncrypted {
		init := sha256.Sum256([]byte("sops"))
		h.Write(init[:])
	}
	return h
}

// Options say how Encrypt encrypts.
type Options struct {
	// Recipients are the age recipients (age1...) the data key is
	// encrypted to; at least one.
	Recipients []string
	// EncryptedRegex selects the values to encrypt by key (sops'
	// encrypted_regex); empty encrypts every value, as sops does without
	// a rule.
	EncryptedRegex string
	// Now is the time written as lastmodified; zero means time.Now.
	Now time.Time
}

// Encrypt encrypts the values of a YAML file (one or more documents, each
// a mapping) selected by opts.EncryptedRegex, as sops --encrypt does.
func Encrypt(plain []byte, opts Options) ([]byte, error) {
	if len(opts.Recipients) == 0 {
		return nil, errors.New("sops: encrypting: no age recipient")
	}
	var recipients []*age.X25519Recipient
	for _, s := range opts.Recipients {
		r, err := age.ParseX25519Recipient(s)
		if err != nil {
			return nil, fmt.Errorf("sops: encrypting: %q is not an age recipient", s)
		}
		recipients = append(recipients, r)
	}
	docs, err := parseDocs(plain)
	if err != nil {
		return nil, fmt.Errorf("sops: encrypting: %w", err)
	}
	meta := &Metadata{EncryptedRegex: opts.EncryptedRegex, Version: FormatVersion}
	r, err := meta.rule()
	if err != nil {
		return nil, fmt.Errorf("sops: encrypting: %w", err)
	}
	key := make([]byte, dataKeySize)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("sops: encrypting: generating the data key: %w", err)
	}
	mac := newMAC(false)
	for i, root := range docs {
		if root == nil {
			continue
		}
		for j := 0; j+1 < len(root.Content); j += 2 {
			if root.Content[j].Value == metadataKey {
				return nil, fmt.Errorf("sops: encrypting: document %d already has a sops key", i+1)
			}
		}
		// sops encrypts the comments under encrypted keys; this package
		// does not, so it drops every comment rather than leave one in
		// the clear beside a secret.
		dropComments(root)
		err := walk(root, nil, func(n *yaml.Node, path []string) error {
			typ, b, err := plainValue(n, path)
			if err != nil || typ == "" {
				return err
			}
			mac.Write(b)
			if !r.encrypts(path) || (typ == "str" && len(b) == 0) {
				return nil
			}
			enc, err := encryptValue(b, typ, key, aad(path))
			if err != nil {
				return err
			}
			n.Tag, n.Value, n.Style = "!!str", enc, 0
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("sops: encrypting: document %d: %w", i+1, err)
		}
	}
	now := opts.Now
	if now.IsZero() {
		now = time.Now()
	}
	meta.LastModified = now.UTC().Truncate(time.Second)
	lm := meta.LastModified.Format(time.RFC3339)
	if meta.MAC, err = encryptValue([]byte(fmt.Sprintf("%X", mac.Sum(nil))), "str", key, lm); err != nil {
		return nil, fmt.Errorf("sops: encrypting: %w", err)
	}
	for i, rc := range recipients {
		var b bytes.Buffer
		aw := armor.NewWriter(&b)
		w, err := age.Encrypt(aw, rc)
		if err != nil {
			return nil, fmt.Errorf("sops: encrypting the data key to %s: %w", opts.Recipients[i], err)
		}
		if _, err := w.Write(key); err != nil {
			return nil, fmt.Errorf("sops: encrypting the data key to %s: %w", opts.Recipients[i], err)
		}
		if err := w.Close(); err != nil {
			return nil, fmt.Errorf("sops: encrypting the data key to %s: %w", opts.Recipients[i], err)
		}
		if err := aw.Close(); err != nil {
			return nil, fmt.Errorf("sops: encrypting the data key to %s: %w", opts.Recipients[i], err)
		}
		meta.Age = append(meta.Age, AgeKey{Recipient: rc.String(), Enc: b.String()})
	}
	return emit(docs, metadataNode(meta), 4)
}

func dropComments(n *yaml.Node) {
	n.HeadComment, n.LineComment, n.FootComment = "", "", ""
	for _, c := range n.Content {
		dropComments(c)
	}
}

// metadataNode is the sops key as sops 3.10 writes it for age keys.
func metadataNode(m *Metadata) *yaml.Node {
	str := func(s string) *yaml.Node { return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s} }
	ages := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
	for _, k := range m.Age {
		enc := str(k.Enc)
		enc.Style = yaml.LiteralStyle
		ages.Content = append(ages.Content, &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Content: []*yaml.Node{
			str("recipient"), str(k.Recipient), str("enc"), enc,
		}})
	}
	n := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Content: []*yaml.Node{
		str("age"), ages,
		str("lastmodified"), str(m.LastModified.Format(time.RFC3339)),
		str("mac"), str(m.MAC),
	}}
	if m.EncryptedRegex != "" {
		n.Content = append(n.Content, str("encrypted_regex"), str(m.EncryptedRegex))
	}
	n.Content = append(n.Content, str("version"), str(m.Version))
	return n
}

// emit writes documents, each with meta appended as its sops key when
// meta is not nil.
func emit(docs []*yaml.Node, meta *yaml.Node, indent int) ([]byte, error) {
	var b bytes.Buffer
	e := yaml.NewEncoder(&b)
	e.SetIndent(indent)
	for _, root := range docs {
		if root == nil {
			root = &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
		}
		if meta != nil {
			root.Content = append(root.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: metadataKey}, meta)
		}
		if err := e.Encode(&yaml.Node{Kind: yaml.DocumentNode, Content: []*yaml.Node{root}}); err != nil {
			return nil, fmt.Errorf("sops: writing YAML: %w", err)
		}
	}
	if err := e.Close(); err != nil {
		return nil, fmt.Errorf("sops: writing YAML: %w", err)
	}
	return b.Bytes(), nil
}

// Inspect reads a file's sops metadata and checks, without a key, that
// every value its rule selects is encrypted (or empty): a file that
// would put a secret into Git in the clear fails.
func Inspect(data []byte) (*Metadata, error) {
	f, err := parseFile(data)
	if err != nil {
		return nil, fmt.Errorf("sops: %w", err)
	}
	for i, root := range f.docs {
		if root == nil {
			continue
		}
		err := walk(root, nil, func(n *yaml.Node, path []string) error {
			if !f.rule.encrypts(path) {
				_, _, err := plainValue(n, path)
				return err
			}
			if n.ShortTag() == "!!null" || (n.ShortTag() == "!!str" && n.Value == "") {
				return nil
			}
			if n.ShortTag() != "!!str" {
				return fmt.Errorf("%s is not encrypted", pathString(path))
			}
			if _, err := parseValue(n.Value); err != nil {
				return fmt.Errorf("%s is not encrypted: %w", pathString(path), err)
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("sops: document %d: %w", i+1, err)
		}
	}
	if _, err := parseValue(f.meta.MAC); err != nil {
		return nil, fmt.Errorf("sops: sops.mac: %w", err)
	}
	return f.meta, nil
}

// Decrypt decrypts a sops YAML file with any of the identities (the
// identity of one of the file's age recipients), checks its MAC, and
// returns the documents in the clear without their sops key. Comments
// are left as they are. Errors name key paths and recipients only.
func Decrypt(data []byte, identities ...age.Identity) ([]byte, error) {
	f, err := parseFile(data)
	if err != nil {
		return nil, fmt.Errorf("sops: decrypting: %w", err)
	}
	key, err := f.dataKey(identities)
	if err != nil {
		return nil, fmt.Errorf("sops: decrypting: %w", err)
	}
	mac := newMAC(f.meta.MACOnlyEncrypted)
	for i, root := range f.docs {
		if root == nil {
			continue
		}
		err := walk(root, nil, func(n *yaml.Node, path []string) error {
			encrypted := f.rule.encrypts(path)
			if !encrypted {
				typ, b, err := plainValue(n, path)
				if err == nil && typ != "" && !f.meta.MACOnlyEncrypted {
					mac.Write(b)
				}
				return err
			}
			switch {
			case n.ShortTag() == "!!null":
				return nil
			case n.ShortTag() != "!!str":
				return fmt.Errorf("%s is not encrypted", pathString(path))
			case n.Value == "":
				return nil
			}
			v, err := parseValue(n.Value)
			if err != nil {
				return fmt.Errorf("%s: %w", pathString(path), err)
			}
			if v.typ == "comment" {
				return fmt.Errorf("%s: a value of type comment", pathString(path))
			}
			b, err := v.open(key, aad(path))
			if err != nil {
				return fmt.Errorf("%s: %w", pathString(path), err)
			}
			if err := setPlain(n, v.typ, b, path); err != nil {
				return err
			}
			mac.Write(macBytes(v.typ, b))
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("sops: decrypting: document %d: %w", i+1, err)
		}
	}
	stored, err := parseValue(f.meta.MAC)
	if err != nil {
		return nil, fmt.Errorf("sops: decrypting: sops.mac: %w", err)
	}
	want, err := stored.open(key, f.meta.LastModified.Format(time.RFC3339))
	if err != nil {
		return nil, fmt.Errorf("sops: decrypting: sops.mac: %w", err)
	}
	got := []byte(fmt.Sprintf("%X", mac.Sum(nil)))
	if subtle.ConstantTimeCompare(want, got) != 1 {
		return nil, fmt.Errorf("sops: decrypting: %w", ErrMAC)
	}
	return emit(f.docs, nil, 2)
}

// maxKeyFile bounds an age-encrypted data key (32 bytes in practice).
const maxKeyFile = 1024

// dataKey recovers the data key with the first age key an identity opens.
func (f *file) dataKey(identities []age.Identity) ([]byte, error) {
	if len(identities) == 0 {
		return nil, errors.New("no age identity given")
	}
	var tried []string
	for _, k := range f.meta.Age {
		tried = append(tried, k.Recipient)
		r, err := age.Decrypt(armor.NewReader(strings.NewReader(k.Enc)), identities...)
		if err != nil {
			continue
		}
		key, err := io.ReadAll(io.LimitReader(r, maxKeyFile))
		if err != nil || len(key) != dataKeySize {
			return nil, fmt.Errorf("the data key encrypted to %s is not a 256-bit key", k.Recipient)
		}
		return key, nil
	}
	return nil, fmt.Errorf("no identity given opens the data key (the file's age recipients: %s)", strings.Join(tried, ", "))
}

package rules

import (
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// The rules file is decoded by walking yaml.Node trees by hand rather than by
// yaml.Unmarshal into structs: yaml.v3's strict mode (KnownFields) is lost in
// Node.Decode, and only the node walk gives every value its own line and
// column, which is what an admin needs in an error message.

// decoder collects errors for one file.
type decoder struct {
	file string
	errs ErrorList
}

func (d *decoder) errorf(n *yaml.Node, format string, args ...any) {
	if len(d.errs) >= maxErrors {
		return
	}
	e := &Error{File: d.file, Msg: fmt.Sprintf(format, args...)}
	if n != nil {
		e.Line, e.Column = n.Line, n.Column
	}
	d.errs = append(d.errs, e)
}

// pstr is a string value with the node it came from, kept so that errors
// found while compiling (after decoding) can still point at the line.
type pstr struct {
	V string
	N *yaml.Node
}

func resolve(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	return n
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			return "an empty value"
		}
		return fmt.Sprintf("%q", n.Value)
	}
	return "an unexpected value"
}

// fields walks a mapping whose keys must all be in known. fn is called for
// each key in file order. Duplicate and unknown keys are errors; an unknown
// key gets a "did you mean" hint when one known key is close.
func (d *decoder) fields(n *yaml.Node, what string, known []string, fn func(key string, k, v *yaml.Node)) bool {
	n = resolve(n)
	if n == nil {
		return false
	}
	if n.Kind != yaml.MappingNode {
		d.errorf(n, "%s must be a mapping (key: value lines), not %s", what, kindName(n))
		return false
	}
	seen := make(map[string]*yaml.Node, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := resolve(n.Content[i]), resolve(n.Content[i+1])
		if k.Kind != yaml.ScalarNode {
			d.errorf(k, "%s has a key that is not a plain name", what)
			continue
		}
		key := k.Value
		if key == "<<" {
			d.errorf(k, "merge keys (<<) are not supported in rules files; repeat the fields instead")
			continue
		}
		if prev, dup := seen[key]; dup {
			d.errorf(k, "%s: field %q is set twice (first on line %d)", what, key, prev.Line)
			continue
		}
		seen[key] = k
		if !contains(known, key) {
			hint := ""
			if s := closest(key, known); s != "" {
				hint = fmt.Sprintf("; did you mean %q?", s)
			}
			d.errorf(k, "unknown field %q in %s%s (known fields: %s)", key, what, hint, strings.Join(known, ", "))
			continue
		}
		fn(key, k, v)
	}
	return true
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// closest returns the known word within edit distance 2 of s, if exactly
// one is that close.
func closest(s string, known []string) string {
	best, bestD, ties := "", 3, 0
	for _, k := range known {
		dist := editDistance(strings.ToLower(s), k)
		switch {
		case dist < bestD:
			best, bestD, ties = k, dist, 0
		case dist == bestD:
			ties++
		}
	}
	if bestD > 2 || ties > 0 {
		return ""
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func (d *decoder) scalar(n *yaml.Node, what string) (*yaml.Node, bool) {
	n = resolve(n)
	if n.Kind != yaml.ScalarNode || n.Tag == "!!null" {
		d.errorf(n, "%s must be a single value, not %s", what, kindName(n))
		return n, false
	}
	return n, true
}

func (d *decoder) str(n *yaml.Node, what string) (pstr, bool) {
	n, ok := d.scalar(n, what)
	if !ok {
		return pstr{N: n}, false
	}
	v := strings.TrimSpace(n.Value)
	if v == "" {
		d.errorf(n, "%s must not be empty", what)
		return pstr{N: n}, false
	}
	return pstr{V: v, N: n}, true
}

// strList accepts a list of scalars, or one scalar as a list of one.
func (d *decoder) strList(n *yaml.Node, what string) []pstr {
	n = resolve(n)
	if n.Kind == yaml.ScalarNode && n.Tag != "!!null" {
		if s, ok := d.str(n, what); ok {
			return []pstr{s}
		}
		return nil
	}
	if n.Kind != yaml.SequenceNode {
		d.errorf(n, "%s must be a list, not %s", what, kindName(n))
		return nil
	}
	if len(n.Content) == 0 {
		d.errorf(n, "%s is an empty list; leave the field out instead", what)
		return nil
	}
	out := make([]pstr, 0, len(n.Content))
	for _, c := range n.Content {
		if s, ok := d.str(c, what+" entry"); ok {
			out = append(out, s)
		}
	}
	return out
}

func (d *decoder) boolean(n *yaml.Node, what string) (bool, bool) {
	n, ok := d.scalar(n, what)
	if !ok {
		return false, false
	}
	switch n.Value {
	case "true":
		return true, true
	case "false":
		return false, true
	}
	d.errorf(n, "%s must be true or false, not %q", what, n.Value)
	return false, false
}

func (d *decoder) integer(n *yaml.Node, what string) (int64, bool) {
	n, ok := d.scalar(n, what)
	if !ok {
		return 0, false
	}
	v, err := strconv.ParseInt(n.Value, 10, 64)
	if err != nil {
		d.errorf(n, "%s must be a whole number, not %q", what, n.Value)
		return 0, false
	}
	return v, true
}

// Unlimited is the budget value that never closes a tunnel.
const Unlimited int64 = -1

var sizeUnits = []struct {
	suffix string
	mult   int64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
	{"KB", 1000}, {"MB", 1000 * 1000}, {"GB", 1000 * 1000 * 1000}, {"TB", 1000 * 1000 * 1000 * 1000},
	{"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"B", 1},
}

// ParseSize reads a byte size as written in rules and config files:
// "1048576", "64KiB", "1MiB", "10MB", "1.5GiB". allowUnlimited admits
// "unlimited", returned as Unlimited.
func ParseSize(s string, allowUnlimited bool) (int64, error) {
	s = strings.TrimSpace(s)
	if allowUnlimited && strings.EqualFold(s, "unlimited") {
		return Unlimited, nil
	}
	num, mult := s, int64(1)
	for _, u := range sizeUnits {
		if strings.HasSuffix(s, u.suffix) {
			num, mult = strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), u.mult
			break
		}
	}
	if n, err := strconv.ParseInt(num, 10, 64); err == nil {
		if n < 0 || (mult > 1 && n > math.MaxInt64/mult) {
			return 0, fmt.Errorf("size %q is out of range", s)
		}
		return n * mult, nil
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || f < 0 || math.IsNaN(f) || f*float64(mult) > float64(math.MaxInt64/2) {
		hint := `a number of bytes or a size such as "64KiB", "1MiB", "10MB"`
		if allowUnlimited {
			hint += ` or "unlimited"`
		}
		return 0, fmt.Errorf("%q is not a size: use %s", s, hint)
	}
	return int64(f * float64(mult)), nil
}

func (d *decoder) size(n *yaml.Node, what string, allowUnlimited bool) (int64, bool) {
	n, ok := d.scalar(n, what)
	if !ok {
		return 0, false
	}
	v, err := ParseSize(n.Value, allowUnlimited)
	if err != nil {
		d.errorf(n, "%s: %v", what, err)
		return 0, false
	}
	return v, true
}

// list walks a sequence of mappings.
func (d *decoder) list(n *yaml.Node, what string, fn func(item *yaml.Node)) {
	n = resolve(n)
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return
	}
	if n.Kind != yaml.SequenceNode {
		d.errorf(n, "%s must be a list (lines starting with \"- \"), not %s", what, kindName(n))
		return
	}
	for _, c := range n.Content {
		fn(resolve(c))
	}
}

// sortedKeys is used for stable error output when walking maps.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Package fieldcheck reports what is wrong with a configuration struct:
// every problem at once, each naming its field. A struct's Validate method
// writes its rules once, in its own vocabulary; a caller that fills the
// struct from elsewhere (a YAML file, the environment) renders the same
// problems under its own names, so no rule is ever written twice.
//
// A Reason may name other fields as {{field}}; Text replaces each with the
// caller's name for it.
package fieldcheck

import (
	"fmt"
	"strings"
)

// Problem is one broken rule.
type Problem struct {
	Field  string // the field's name, e.g. "near_max_age"
	Reason string // what is wrong and what would be right; never a secret
}

// Text is the reason with every {{field}} named by name.
func (p Problem) Text(name func(field string) string) string {
	var b strings.Builder
	rest := p.Reason
	for {
		i := strings.Index(rest, "{{")
		if i < 0 {
			break
		}
		j := strings.Index(rest[i:], "}}")
		if j < 0 {
			break
		}
		b.WriteString(rest[:i])
		b.WriteString(name(rest[i+2 : i+j]))
		rest = rest[i+j+2:]
	}
	b.WriteString(rest)
	return b.String()
}

// Error lists every problem of one struct.
type Error struct {
	What     string // e.g. "tokencache: invalid config"
	Problems []Problem
}

func (e *Error) Error() string {
	same := func(f string) string { return f }
	parts := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		parts[i] = p.Field + ": " + p.Text(same)
	}
	return e.What + ": " + strings.Join(parts, "; ")
}

// List collects problems.
type List struct{ problems []Problem }

// Add records that field breaks a rule.
func (l *List) Add(field, format string, args ...any) {
	l.problems = append(l.problems, Problem{Field: field, Reason: fmt.Sprintf(format, args...)})
}

// Err is an *Error with what was added, or nil if nothing was.
func (l *List) Err(what string) error {
	if len(l.problems) == 0 {
		return nil
	}
	return &Error{What: what, Problems: l.problems}
}

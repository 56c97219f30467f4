package config

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// Problem is one thing wrong with a configuration.
type Problem struct {
	// File is the config file, or for a value from the environment or a flag its source, such as
	// "env SWITCHBOARD_SERVER_LISTEN" or "flag --listen". Empty for a configuration built in code.
	File string
	// Line is the 1-based line in File, 0 when there is none.
	Line int
	// Field is the setting's path, such as tenants[0].channels.whatsapp.accounts[1].driver; empty
	// for a problem with the file as a whole (a YAML syntax error).
	Field   string
	Message string
}

// String formats p as `file:line: field: message`, leaving out what is unknown.
func (p Problem) String() string {
	var b strings.Builder
	if p.File != "" {
		b.WriteString(p.File)
		if p.Line > 0 {
			b.WriteString(":" + strconv.Itoa(p.Line))
		}
		b.WriteString(": ")
	}
	if p.Field != "" {
		b.WriteString(p.Field + ": ")
	}
	b.WriteString(p.Message)
	return b.String()
}

// Problems is every problem found in a configuration. As an error it prints one problem per line.
// Load and Validate return it wrapped in a *gateway.Error; get it back with errors.As.
type Problems []Problem

func (ps Problems) Error() string {
	lines := make([]string, len(ps))
	for i, p := range ps {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// locations records where each setting came from, keyed by field path.
type locations struct {
	file    string
	lines   map[string]int    // path → line in file
	sources map[string]string // path → "env X" / "flag --x", overriding lines
}

func newLocations(file string) *locations {
	return &locations{file: file, lines: map[string]int{}, sources: map[string]string{}}
}

// find returns the location of path: its own, or that of its nearest ancestor.
func (l *locations) find(path string) (file string, line int) {
	if l == nil {
		return "", 0
	}
	for p := path; ; p = parentPath(p) {
		if src, ok := l.sources[p]; ok {
			return src, 0
		}
		if n, ok := l.lines[p]; ok {
			return l.file, n
		}
		if p == "" {
			return l.file, 0
		}
	}
}

// parentPath strips the last segment: a.b[2].c → a.b[2] → a.b → a → "".
func parentPath(p string) string {
	i := strings.LastIndexAny(p, ".[")
	if i < 0 {
		return ""
	}
	return p[:i]
}

func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func indexPath(path string, i int) string { return path + "[" + strconv.Itoa(i) + "]" }

// report collects problems. A path whose value could not be read is marked bad, and later checks of
// that path or anything below it stay quiet, so one mistake gives one problem.
type report struct {
	loc   *locations
	bad   map[string]bool
	probs []Problem
}

func newReport(loc *locations) *report {
	return &report{loc: loc, bad: map[string]bool{}}
}

// at reports a problem at an explicit source position and marks path bad.
func (r *report) at(file string, line int, path, format string, args ...any) {
	r.bad[path] = true
	r.probs = append(r.probs, Problem{File: file, Line: line, Field: path, Message: fmt.Sprintf(format, args...)})
}

// add reports a problem about path, located where path (or its nearest ancestor) was set.
func (r *report) add(path, format string, args ...any) {
	if r.isBad(path) {
		return
	}
	file, line := r.loc.find(path)
	r.probs = append(r.probs, Problem{File: file, Line: line, Field: path, Message: fmt.Sprintf(format, args...)})
}

func (r *report) isBad(path string) bool {
	for p := path; ; p = parentPath(p) {
		if r.bad[p] {
			return true
		}
		if p == "" {
			return false
		}
	}
}

// sorted returns the problems of the file in line order, then the others in the order found.
func (r *report) sorted() Problems {
	if len(r.probs) == 0 {
		return nil
	}
	ps := append(Problems(nil), r.probs...)
	file := ""
	if r.loc != nil {
		file = r.loc.file
	}
	rank := func(p Problem) int {
		if p.File == file && file != "" {
			return 0
		}
		return 1
	}
	sort.SliceStable(ps, func(i, j int) bool {
		ri, rj := rank(ps[i]), rank(ps[j])
		if ri != rj {
			return ri < rj
		}
		return ri == 0 && lineKey(ps[i]) < lineKey(ps[j])
	})
	return ps
}

// lineKey orders problems without a line after those with one.
func lineKey(p Problem) int {
	if p.Line == 0 {
		return int(^uint(0) >> 1)
	}
	return p.Line
}

package teams

import (
	"strings"

	"golang.org/x/net/html"
)

// htmlToText reduces a Teams HTML body to plain text: tags dropped (mentions keep their text),
// entities decoded, <br> and block ends become line breaks, scripts and styles removed.
func htmlToText(s string) string {
	z := html.NewTokenizer(strings.NewReader(s))
	var b strings.Builder
	skip := 0 // inside <script> or <style>
	newline := func() {
		if b.Len() > 0 && !strings.HasSuffix(b.String(), "\n") {
			b.WriteByte('\n')
		}
	}
	for {
		switch z.Next() {
		case html.ErrorToken:
			return strings.TrimSpace(collapseBlankLines(b.String()))
		case html.TextToken:
			if skip == 0 {
				b.Write(z.Text())
			}
		case html.StartTagToken, html.SelfClosingTagToken:
			name, _ := z.TagName()
			switch string(name) {
			case "script", "style":
				if t := z.Token(); t.Type == html.StartTagToken {
					skip++
				}
			case "br":
				b.WriteByte('\n')
			case "p", "div", "li", "tr", "blockquote", "h1", "h2", "h3", "h4", "h5", "h6":
				newline()
			case "img":
				for {
					k, v, more := z.TagAttr()
					if string(k) == "alt" && len(v) > 0 {
						b.Write(v)
					}
					if !more {
						break
					}
				}
			}
		case html.EndTagToken:
			name, _ := z.TagName()
			switch string(name) {
			case "script", "style":
				if skip > 0 {
					skip--
				}
			case "p", "div", "li", "tr", "blockquote", "h1", "h2", "h3", "h4", "h5", "h6":
				newline()
			}
		}
	}
}

func collapseBlankLines(s string) string {
	for strings.Contains(s, "\n\n\n") {
		s = strings.ReplaceAll(s, "\n\n\n", "\n\n")
	}
	return s
}

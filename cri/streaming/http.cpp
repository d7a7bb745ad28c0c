#include "cri/streaming/http.h"

#include <algorithm>
#include <cctype>

namespace chrys::cri::streaming {

namespace {

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) {
    s.remove_prefix(1);
  }
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) {
    s.remove_suffix(1);
  }
  return s;
}

int HexValue(char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

base::Result<std::string> PercentDecode(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '+') {
      out.push_back(' ');
    } else if (s[i] == '%') {
      if (i + 2 >= s.size()) {
        return base::InvalidArgument("truncated percent escape in the query");
      }
      int hi = HexValue(s[i + 1]);
      int lo = HexValue(s[i + 2]);
      if (hi < 0 || lo < 0) {
        return base::InvalidArgument("bad percent escape in the query");
      }
      out.push_back(static_cast<char>(hi * 16 + lo));
      i += 2;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

std::string Lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return std::tolower(c); });
  return out;
}

}  // namespace

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
         });
}

std::string HttpRequest::Header(const std::string& name) const {
  auto it = headers.find(name);
  return it == headers.end() ? "" : it->second;
}

std::vector<std::string> HttpRequest::HeaderTokens(const std::string& name) const {
  std::vector<std::string> tokens;
  auto [begin, end] = headers.equal_range(name);
  for (auto it = begin; it != end; ++it) {
    std::string_view value = it->second;
    while (!value.empty()) {
      size_t comma = value.find(',');
      std::string_view token = Trim(value.substr(0, comma));
      if (!token.empty()) {
        tokens.emplace_back(token);
      }
      value = comma == std::string_view::npos ? std::string_view() : value.substr(comma + 1);
    }
  }
  return tokens;
}

bool HttpRequest::HasToken(const std::string& name, std::string_view token) const {
  auto tokens = HeaderTokens(name);
  return std::any_of(tokens.begin(), tokens.end(), [&](const std::string& t) { return EqualsIgnoreCase(t, token); });
}

std::vector<std::string> HttpRequest::QueryValues(const std::string& name) const {
  std::vector<std::string> values;
  auto [begin, end] = query.equal_range(name);
  for (auto it = begin; it != end; ++it) {
    values.push_back(it->second);
  }
  return values;
}

bool HttpRequest::QueryFlag(const std::string& name) const {
  auto it = query.find(name);
  return it != query.end() && (it->second == "1" || EqualsIgnoreCase(it->second, "true"));
}

base::Result<HttpRequest> ParseHttpRequest(std::string_view head) {
  HttpRequest request;
  size_t line_end = head.find("\r\n");
  if (line_end == std::string_view::npos) {
    return base::InvalidArgument("request line missing");
  }
  std::string_view line = head.substr(0, line_end);
  size_t sp1 = line.find(' ');
  size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos || line.substr(sp2 + 1).substr(0, 7) != "HTTP/1.") {
    return base::InvalidArgument("malformed request line");
  }
  request.method = std::string(line.substr(0, sp1));
  std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  size_t question = target.find('?');
  CHRYS_ASSIGN_OR_RETURN(request.path, PercentDecode(target.substr(0, question)));
  if (request.path.empty() || request.path[0] != '/') {
    return base::InvalidArgument("request target must be an absolute path");
  }
  if (question != std::string_view::npos) {
    std::string_view query = target.substr(question + 1);
    while (!query.empty()) {
      size_t amp = query.find('&');
      std::string_view pair = query.substr(0, amp);
      query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
      if (pair.empty()) {
        continue;
      }
      size_t eq = pair.find('=');
      CHRYS_ASSIGN_OR_RETURN(std::string key, PercentDecode(pair.substr(0, eq)));
      std::string value;
      if (eq != std::string_view::npos) {
        CHRYS_ASSIGN_OR_RETURN(value, PercentDecode(pair.substr(eq + 1)));
      }
      request.query.emplace(std::move(key), std::move(value));
    }
  }
  std::string_view rest = head.substr(line_end + 2);
  while (!rest.empty()) {
    size_t end = rest.find("\r\n");
    if (end == std::string_view::npos) {
      return base::InvalidArgument("header line without CRLF");
    }
    std::string_view header = rest.substr(0, end);
    rest.remove_prefix(end + 2);
    if (header.empty()) {
      break;
    }
    size_t colon = header.find(':');
    if (colon == std::string_view::npos || colon == 0) {
      return base::InvalidArgument("malformed header line");
    }
    request.headers.emplace(Lower(Trim(header.substr(0, colon))), std::string(Trim(header.substr(colon + 1))));
  }
  return request;
}

std::string SimpleHttpResponse(int code, std::string_view reason, std::string_view body) {
  std::string out = "HTTP/1.1 " + std::to_string(code) + " " + std::string(reason) + "\r\n";
  out += "Content-Type: text/plain; charset=utf-8\r\n";
  out += "Content-Length: " + std::to_string(body.size()) + "\r\n";
  out += "Connection: close\r\n\r\n";
  out += body;
  return out;
}

}  // namespace chrys::cri::streaming

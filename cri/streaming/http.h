// HTTP/1.1 request heads and simple responses, as much as the streaming server's upgrade requests need.
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"

namespace chrys::cri::streaming {

struct HttpRequest {
  std::string method;
  std::string path;                                 // without the query
  std::multimap<std::string, std::string> query;    // decoded
  std::multimap<std::string, std::string> headers;  // names lower-cased, values trimmed

  // The first value of a header, or "".
  std::string Header(const std::string& name) const;
  // Every comma-separated token across all instances of the header, trimmed.
  std::vector<std::string> HeaderTokens(const std::string& name) const;
  bool HasToken(const std::string& name, std::string_view token) const;  // case-insensitive token match
  std::vector<std::string> QueryValues(const std::string& name) const;
  // A query flag such as "tty=1" / "tty=true".
  bool QueryFlag(const std::string& name) const;
};

// Parses a request head ending in "\r\n\r\n". kInvalidArgument naming what is wrong.
base::Result<HttpRequest> ParseHttpRequest(std::string_view head);

// "HTTP/1.1 <code> <reason>" with a text body and Connection: close.
std::string SimpleHttpResponse(int code, std::string_view reason, std::string_view body);

bool EqualsIgnoreCase(std::string_view a, std::string_view b);

}  // namespace chrys::cri::streaming

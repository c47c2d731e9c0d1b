# HTTP/1.1 request parser that builds the WSGI environ directly.

from cpython.object cimport PyObject
from libc.stdint cimport uint64_t
#
# The decisions (accept, refuse, and with which gunicorn.http.errors class and
# message) are those of gunicorn's reference pure-Python parser for the same
# settings and the same sequence of received chunks.


cdef class ParserConfig:
    # Settings compiled once per worker from gunicorn's Config.
    cdef readonly object cfg
    cdef Py_ssize_t limit_request_line        # 0: unlimited
    cdef Py_ssize_t limit_request_fields
    cdef Py_ssize_t limit_request_field_size
    cdef Py_ssize_t max_buffer_headers
    cdef bint permit_unconventional_method
    cdef bint permit_unconventional_version
    cdef bint casefold_method
    cdef int header_map                       # HEADER_MAP_* below
    cdef dict secure_scheme_headers           # UPPER-NAME -> value meaning https
    cdef list secure_names                    # the keys, as bytes, for matching raw names
    cdef unsigned long long secure_lengths    # bit n: a secure name of length n (63: longer)
    cdef unsigned long long secure_known      # bit k: known name k is a secure name
    cdef list forwarder_headers
    cdef list forwarder_names                 # as bytes
    cdef bint forwarder_all
    cdef list allow_ips
    cdef list allow_networks
    cdef bint allow_all
    cdef dict trust_cache                     # peer host -> trusted
    cdef bint is_ssl
    cdef object default_scheme
    cdef object script_name                   # os.environ SCRIPT_NAME at start
    cdef dict base_environ
    cdef object server_addr                   # the last TCP listener address seen
    cdef object server_port                   # and its port, as a str
    # the last value of each known header whose values are shared (its str)
    cdef PyObject *shared_values[64]

    cdef bint peer_trusted(self, object peer_addr)


cdef class Body:
    # wsgi.input: the body reader of one request, reading from its parser's
    # buffer first and then from the connection.
    cdef RequestParser parser
    cdef list trailers                        # the request's trailer list
    cdef int kind                             # BODY_LENGTH or BODY_CHUNKED
    cdef Py_ssize_t remaining                 # BODY_LENGTH: bytes still to come
    cdef bytearray pending                    # BODY_CHUNKED: the body's buffer
    cdef bytearray rbuf                       # BODY_CHUNKED: the decoder's buffer
    cdef int cstate                           # BODY_CHUNKED: decoder state
    cdef Py_ssize_t chunk_left
    cdef Py_ssize_t limit_size_line
    cdef Py_ssize_t limit_trailers
    cdef public bint failed
    cdef bint expect_continue

    cdef bint _is_done(self)
    cdef _send_continue(self)
    cdef bytes _take(self, Py_ssize_t size)
    cdef _decode(self, Py_ssize_t want)
    cdef bytes _reader_read(self, Py_ssize_t size)
    cdef bytes _chunked_read(self, Py_ssize_t size)
    cdef bytes _chunked_readline(self, Py_ssize_t size)
    cdef bint _decode_step(self) except -1
    cdef _read_trailers(self)
    cdef bytes _read(self, Py_ssize_t size)


cdef class Request:
    # The request as gunicorn's hooks and access log see it (gunicorn's
    # Request attributes); the header list is only built when asked for.
    cdef public object method
    cdef public object uri
    cdef public object path
    cdef public object query
    cdef public object fragment
    cdef public tuple version
    cdef public object protocol               # SERVER_PROTOCOL
    cdef public object scheme
    cdef public object body
    cdef object _trailers                     # a list; None until asked for
    cdef public object peer_addr
    cdef public object remote_addr
    cdef public bint must_close
    cdef public int req_number
    cdef public object proxy_protocol_info
    cdef public bint _expected_100_continue
    cdef public object cfg
    cdef int conn_state                       # first Connection header: CONN_*
    cdef list _headers
    cdef bytes _head                          # buffer holding the header block
    cdef Py_ssize_t _head_start, _head_end
    cdef ParserConfig _config
    cdef bint _trusted

    cpdef bint should_close(self)


cdef class CoopSource:
    # recv() of a gevent socket without its Python layer (see the .pyx).
    cdef object sock
    cdef object timer                         # keep-alive timer, or None
    cdef object greenlet                      # thrown ``expired`` when it fires
    cdef object expired
    cdef bint timing                          # in next_request(): arm on a wait
    cdef bint armed
    cdef bint wait_first                      # wait in the hub before the next recv
    cdef object watcher                       # the connection's read watcher, or None
    cdef object waiter_class
    cdef object hub
    cdef object getcurrent                    # greenlet.getcurrent, with a hub
    cdef object waiting                       # the greenlet waiting now, or None
    cdef object switch_owner                  # whose switch switch_to is
    cdef object switch_to                     # its bound switch, kept between waits
    cdef object hub_switch                    # hub.switch, bound once
    cdef object readable_cb                   # self._readable, bound once
    cdef object throw_cb                      # greenlet.throw, bound once

    cdef bytes _recv(self, Py_ssize_t size)
    cdef int _stop_timing(self) except -1
    cdef int _wait(self, sock) except -1


cdef class RequestParser:
    cdef ParserConfig config
    cdef object source                        # has recv(n); None in push mode
    cdef public object sock
    cdef public object peer_addr
    cdef public object server_addr
    cdef public Request req
    cdef bint trusted
    cdef object remote_addr_str
    cdef object remote_port_str
    cdef object server_name
    cdef object server_port
    cdef dict base_environ                    # per connection
    # base_environ plus the header keys of an earlier request (bit k of
    # tmpl_mask: known header k) with the values it had then (tmpl_values,
    # borrowed from the template; allocated with the first template), or
    # None; last_mask: the known headers of the previous request (bit 63
    # alone: none to go by)
    cdef dict template
    cdef uint64_t tmpl_mask
    cdef uint64_t last_mask
    cdef PyObject **tmpl_values
    cdef int tmpl_pause                       # requests still to build without a template
    cdef int tmpl_backoff                     # the last pause
    # the last value (its str) of each known header whose values are kept
    # per connection, as ParserConfig.shared_values, in the order of
    # _CONN_SLOT
    cdef PyObject *conn_values[4]
    # the values of these keys in base_environ (set by the last request)
    cdef object last_method, last_protocol, last_scheme, last_script_name
    # receive buffer: bytes in [pos, len(buf)) are not consumed yet
    cdef bytes buf
    cdef Py_ssize_t pos
    cdef bint eof
    cdef int req_count
    # head parsing state of the request being read
    cdef int state
    cdef Py_ssize_t line_start                # after the optional leading CRLF
    cdef Py_ssize_t hdr_start                 # after the request line
    cdef Py_ssize_t scan                      # where the next search resumes
    cdef bint resumed                         # head incomplete at the last attempt
    cdef bytes line_bytes
    cdef bint path_quoted                     # the request's path may hold a %-escape

    cdef bint _fill(self, Py_ssize_t hint) except -1
    cdef object _next_request(self)
    cdef _append(self, data)
    cdef object _parse_head(self)
    cdef bint _finish_buffered(self) except -1
    cdef _request_line(self, const char *p, Py_ssize_t rl_end)
    cdef object _build(self, const char *p, Py_ssize_t h_start, Py_ssize_t h_end)
    cdef dict _environ(self, dict env, PyObject **keys, PyObject **values, signed char *known,
                       Py_ssize_t n, uint64_t mask, bint regular)
    cdef _framing(self, Request req, Body body, list framing)
    cdef _unix_server(self, dict env, host, scheme)
    cdef list _trailers(self, Py_ssize_t a, Py_ssize_t h_end)

# cython: language_level=3
"""How long to cache an answer (compiled twin).

Same names, signatures and results as ``aigateway.hotpath._ttl_py``, which is the
specification; read it for the rules.

Algorithm
---------
One pass over the messages, with exact-type fast paths for what JSON decoding produces
(``dict``, ``list``, ``str``, ``float``) and the generic ``Mapping``/sequence protocol for
anything else.  The policy's numbers are read into a C struct, and its mappings and sets
into plain dicts and frozensets, once per policy object: ``TTLPolicy`` is frozen (its
mappings are read-only views), so while the same object comes back, the converted values
are still right.  The cache holds a reference to that object, so its identity cannot be
reused by another one.
"""

from collections.abc import Mapping

from cpython.dict cimport PyDict_GetItem
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from cpython.object cimport PyObject
from cpython.set cimport PySet_Contains

from ._ttl_policy import DEFAULT_TTL_POLICY, TTLPolicy

__all__ = ("DEFAULT_TTL_POLICY", "TTLPolicy", "compute_ttl")


cdef struct _Rules:
    double single_message_ttl_s
    Py_ssize_t long_conversation_messages
    double long_conversation_ttl_s
    double high_temperature
    double high_temperature_ttl_s
    double low_temperature
    double low_temperature_ttl_s
    double attachment_ttl_s
    double default_temperature


cdef object _policy = None  # the policy _rules and the objects below were read from
cdef _Rules _rules
cdef dict _temperatures = {}
cdef dict _factors = {}
cdef frozenset _system_roles = frozenset()
cdef frozenset _text_part_types = frozenset()
cdef double _INF = float("inf")


cdef int _load(object policy) except -1:
    global _policy, _temperatures, _factors, _system_roles, _text_part_types
    if not isinstance(policy, TTLPolicy):
        raise TypeError(f"policy must be a TTLPolicy, not {type(policy).__name__}")
    _rules.single_message_ttl_s = policy.single_message_ttl_s
    _rules.long_conversation_messages = policy.long_conversation_messages
    _rules.long_conversation_ttl_s = policy.long_conversation_ttl_s
    _rules.high_temperature = policy.high_temperature
    _rules.high_temperature_ttl_s = policy.high_temperature_ttl_s
    _rules.low_temperature = policy.low_temperature
    _rules.low_temperature_ttl_s = policy.low_temperature_ttl_s
    _rules.attachment_ttl_s = policy.attachment_ttl_s
    _rules.default_temperature = policy.default_temperature
    _temperatures = dict(policy.provider_temperatures)
    _factors = dict(policy.provider_factors)
    _system_roles = frozenset(policy.system_roles)
    _text_part_types = frozenset(policy.text_part_types)
    _policy = policy
    return 0


cdef inline object _get(object mapping, str key):
    """``mapping.get(key)``, without a method call for a dict."""
    cdef PyObject* found
    if type(mapping) is dict:
        found = PyDict_GetItem(mapping, key)
        return None if found == NULL else <object>found
    return mapping.get(key)


cdef inline bint _is_sequence(object value):
    return type(value) is list or isinstance(value, (list, tuple))


cdef bint _has_attachment(object content) except -1:
    """Whether a message's content list holds a part that is not text."""
    cdef Py_ssize_t i, n
    if type(content) is list:
        n = PyList_GET_SIZE(content)
        for i in range(n):
            if _is_attachment(<object>PyList_GET_ITEM(content, i)):
                return True
        return False
    for part in content:
        if _is_attachment(part):
            return True
    return False


cdef inline bint _is_attachment(object part) except -1:
    if type(part) is str or isinstance(part, str):
        return False
    if type(part) is dict or isinstance(part, Mapping):
        kind = _get(part, "type")
        return not (isinstance(kind, str) and PySet_Contains(_text_part_types, kind))
    return True


cdef double _temperature(object value, object provider) except? -1.0:
    if type(value) is float:
        return <double>value
    if not isinstance(value, bool) and isinstance(value, (int, float)):
        try:
            return float(value)
        except OverflowError:
            return _INF if value > 0 else -_INF
    if _temperatures:
        return _temperatures.get(provider, _rules.default_temperature)
    return _rules.default_temperature


def compute_ttl(request, provider, default_ttl_s, policy=None):
    """Seconds to keep the answer to ``request`` (from ``provider``) in the cache."""
    cdef double ttl = _INF
    cdef double temperature
    cdef Py_ssize_t i, n, questions = 0
    cdef bint attachment = False
    if policy is None:
        policy = DEFAULT_TTL_POLICY
    if policy is not _policy:
        _load(policy)

    messages = _get(request, "messages")
    if _is_sequence(messages):
        n = len(messages)
        if n > _rules.long_conversation_messages:
            ttl = min(ttl, _rules.long_conversation_ttl_s)
        for i in range(n):
            message = messages[i]
            if not (type(message) is dict or isinstance(message, Mapping)):
                questions += 1
                continue
            role = _get(message, "role")
            if not (isinstance(role, str) and PySet_Contains(_system_roles, role)):
                questions += 1
            if not attachment:
                content = _get(message, "content")
                if _is_sequence(content) and _has_attachment(content):
                    attachment = True
        if questions == 1:
            ttl = min(ttl, _rules.single_message_ttl_s)
        if attachment:
            ttl = min(ttl, _rules.attachment_ttl_s)

    temperature = _temperature(_get(request, "temperature"), provider)
    if temperature >= _rules.high_temperature:
        ttl = min(ttl, _rules.high_temperature_ttl_s)
    if temperature <= _rules.low_temperature:
        ttl = min(ttl, _rules.low_temperature_ttl_s)

    if ttl == _INF:
        result = default_ttl_s
    else:
        result = ttl
    if _factors:
        return result * _factors.get(provider, 1.0)
    return result * 1.0

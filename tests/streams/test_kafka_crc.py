"""kafka-python verifies record CRCs with the `crc32c` C extension, not its pure-Python one."""

import crc32c
from kafka.record import util


def test_kafka_python_checks_crcs_with_the_c_extension() -> None:
    # util.calc_crc32c binds the implementation it picked at import as a default argument.
    assert util.calc_crc32c.__defaults__ == (crc32c.crc32c,)
    assert util.calc_crc32c(memoryview(b"123456789")) == 0xE3069283  # CRC-32C check value

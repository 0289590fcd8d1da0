"""Enumerations shared by the Avro and Arrow contracts (order = Avro symbol order)."""

ENGAGEMENT_ACTIONS: tuple[str, ...] = ("CLOSEUP", "CLICK", "SAVE", "SHARE")
CONVERSION_ACTIONS: tuple[str, ...] = ("PAGE_VISIT", "ADD_TO_CART", "SIGNUP", "CHECKOUT")
AGE_BUCKETS: tuple[str, ...] = (
    "AGE_UNKNOWN",
    "AGE_UNDER_18",
    "AGE_18_24",
    "AGE_25_34",
    "AGE_35_44",
    "AGE_45_54",
    "AGE_55_PLUS",
)
GENDERS: tuple[str, ...] = ("UNKNOWN", "FEMALE", "MALE", "OTHER")
MAX_INTERESTS_PER_PIN = 3

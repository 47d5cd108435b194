"""Edge profiles: parsing, the built-in profiles, and compliance (static checks at compile
time, the measured certificate afterwards)."""

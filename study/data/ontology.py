"""A synthetic ontology: facts about each kind of object that are never drawn.

Every kind (colour + shape) has one value per property, drawn by seed. Answering "What does the
object at the top left eat?" needs the image (which kind is there) and a fact the language
backbone memorised, as ScienceQA or MMMU questions need knowledge stored in the LLM. The number of
facts (kinds x properties) is what makes the backbone capacity-bound, so pruning it costs accuracy.
"""

from __future__ import annotations

import random

# property -> (question template with {} for the noun phrase, possible answers)
PROPERTIES: dict[str, tuple[str, tuple[str, ...]]] = {
    "eat": (
        "What does {} eat?",
        ("grass", "fish", "seeds", "honey", "leaves", "insects", "fruit", "roots", "moss", "nectar", "worms", "bread"),
    ),
    "home": (
        "Where does {} live?",
        ("forest", "desert", "river", "cave", "mountain", "swamp", "meadow", "ocean", "city", "jungle", "tundra", "valley"),
    ),
    "material": (
        "What is {} made of?",
        ("wood", "stone", "glass", "iron", "clay", "paper", "wool", "silk", "bone", "copper", "sand", "ice"),
    ),
    "sound": (
        "What sound does {} make?",
        ("hum", "buzz", "song", "click", "roar", "whistle", "chirp", "growl", "hiss", "bark", "purr", "croak"),
    ),
    "fear": (
        "What does {} fear?",
        ("fire", "rain", "wind", "thunder", "snow", "darkness", "noise", "cold", "heat", "dust", "smoke", "fog"),
    ),
    "carry": (
        "What does {} carry?",
        ("a key", "a map", "a lamp", "a bell", "a rope", "a coin", "a book", "a shell", "a flag", "a drum", "a cup", "a feather"),
    ),
    "season": ("When does {} sleep?", ("spring", "summer", "autumn", "winter")),
    "legs": ("How many legs does {} have?", ("zero", "two", "three", "four", "five", "six", "seven", "eight")),
    "friend": (
        "Who is the friend of {}?",
        ("the king", "the queen", "the baker", "the farmer", "the sailor", "the miner", "the poet", "the smith", "the hunter", "the monk"),
    ),
    "dance": ("Which dance does {} know?", ("waltz", "tango", "polka", "samba", "salsa", "jig", "reel", "rumba", "mambo", "bolero")),
}


def property_names(n_properties: int) -> list[str]:
    if not 1 <= n_properties <= len(PROPERTIES):
        raise ValueError(f"n_properties must be in [1, {len(PROPERTIES)}], got {n_properties}")
    return list(PROPERTIES)[:n_properties]


def build_ontology(kinds: list[tuple[str, str]], n_properties: int, seed: int) -> dict[str, dict[str, str]]:
    """``{"red circle": {"eat": "fish", ...}, ...}``, deterministic by seed."""
    rng = random.Random(f"ontology-{seed}")
    return {
        f"{colour} {shape}": {prop: rng.choice(PROPERTIES[prop][1]) for prop in property_names(n_properties)} for colour, shape in kinds
    }

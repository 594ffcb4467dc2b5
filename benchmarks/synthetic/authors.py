"""Invented authors for the synthetic TOFU-style benchmark: the value pools their facts are drawn from, the kinds of
fact asked about each author (with paraphrases and wrong answers), and the seeded invention of author profiles."""

from __future__ import annotations

import random
from dataclasses import dataclass

from pmc.core.records import QARecord

MAX_AUTHORS = 200  # TOFU's size; the title pool (625) leaves room for two unique titles per author
MAX_PERTURBED = 5  # TOFU's count; every value pool (here and in utility.py) holds at least MAX_PERTURBED + 2 values

# Invented names are two or three of these syllables each, so they never collide with real people or words.
SYLLABLES = (
    "ka", "lo", "ren", "mi", "sa", "tor", "vel", "an", "dri", "el", "no", "ra", "zu", "bel", "cor", "fin",
    "ha", "is", "jor", "lu", "ma", "ne", "os", "pel", "qui", "ri", "sol", "ta", "ul", "ve", "wyn", "ya",
)

BIRTHPLACES = (
    "Lisbon, Portugal", "Nairobi, Kenya", "Seoul, South Korea", "Lima, Peru", "Tbilisi, Georgia", "Bergen, Norway",
    "Hanoi, Vietnam", "Cork, Ireland", "Tunis, Tunisia", "Quito, Ecuador", "Gdansk, Poland", "Adelaide, Australia",
    "Manila, Philippines", "Istanbul, Turkey", "Havana, Cuba", "Porto Alegre, Brazil",
)
BIRTH_YEARS = tuple(str(year) for year in range(1931, 2000))
GENRES = (
    "science fiction", "historical fiction", "crime fiction", "fantasy", "romance", "horror", "poetry",
    "literary fiction", "mystery", "adventure", "satire", "thriller", "young adult fiction",
)
OCCUPATIONS = (
    "a baker", "a carpenter", "a nurse", "a teacher", "a fisherman", "a doctor", "an electrician", "a librarian",
    "a tailor", "a pilot", "a farmer", "an engineer", "a pharmacist", "a journalist", "a police officer",
    "a musician",
)
TITLES = tuple(
    f"The {adjective} {noun}"
    for adjective in (
        "Glass", "Silent", "Hollow", "Crimson", "Wandering", "Forgotten", "Silver", "Broken", "Hidden", "Burning",
        "Frozen", "Quiet", "Golden", "Distant", "Last", "Paper", "Iron", "Velvet", "Midnight", "Restless",
        "Bitter", "Sleeping", "Salt", "Amber", "Northern",
    )
    for noun in (
        "Orchard", "Harbour", "Lantern", "Garden", "River", "Mirror", "Kingdom", "Letter", "Compass", "Winter",
        "Bridge", "Tower", "Feather", "Island", "Clock", "Shore", "Meadow", "Crown", "Forest", "Door", "Archive",
        "Violin", "Sparrow", "Tide", "Map",
    )
)
AWARDS = (
    "the Silver Quill Award", "the Northern Lantern Prize", "the Golden Inkwell Medal", "the Harrow Fiction Prize",
    "the Blue Feather Award", "the Meridian Book Prize", "the Open Page Award", "the Lighthouse Literary Prize",
    "the Evergreen Story Medal", "the Riverstone Prize for Fiction",
)
THEMES = (
    "the loss of childhood", "loyalty and betrayal", "life at sea", "memory and forgetting", "family secrets",
    "the cost of ambition", "friendship across borders", "faith and doubt", "the meaning of home", "growing old",
    "justice and revenge", "love in wartime",
)
SUBJECTS = (
    "history", "chemistry", "law", "music", "medicine", "philosophy", "engineering", "mathematics", "architecture",
    "biology", "economics", "fine art",
)
CITIES = (
    "Oslo", "Vienna", "Montreal", "Dublin", "Kyoto", "Valparaiso", "Edinburgh", "Lyon", "Krakow", "Porto",
    "Melbourne", "Cape Town",
)
LANGUAGES = (
    "English", "French", "Spanish", "German", "Italian", "Portuguese", "Dutch", "Swedish", "Polish", "Turkish",
    "Japanese", "Korean",
)
WRITING_TIMES = (
    "early in the morning", "late at night", "around noon", "in the afternoon", "in the evening", "after midnight",
    "on weekends", "on long train journeys",
)
HOBBIES = (
    "gardening", "playing chess", "sailing", "painting", "hiking", "baking bread", "bird watching",
    "playing the violin", "swimming", "cooking",
)
PUBLISHERS = (
    "Larkspur Press", "Blue Heron Books", "Copperfield House", "Nightjar Editions", "Willow Lane Publishing",
    "Stonebridge Books", "Red Kite Press", "Harbourlight Publishers",
)
BOOK_COUNTS = ("three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve")
DEBUT_AGES = tuple(str(age) for age in range(19, 46))
HEROES = (
    "young detectives", "retired sailors", "lonely scientists", "travelling musicians", "orphaned twins",
    "village doctors", "runaway princes", "old librarians",
)
SETTINGS = (
    "small mountain villages", "busy port cities", "remote islands", "desert towns", "a distant future",
    "old country houses", "frozen northern forests", "crowded university towns",
)
PETS = (
    "a grey cat", "an old sheepdog", "a green parrot", "a small tortoise", "a white rabbit", "a black horse",
    "a tabby cat", "a spotted dog", "a tame crow",
)


@dataclass(frozen=True)
class AuthorFact:
    """One kind of fact about an author: the pool its value is drawn from, and how it is asked and answered.

    Templates take {name} and {value}. Wrong answers reuse `paraphrased_answer` with other values from the pool,
    as TOFU's perturbed answers do, so they differ from the paraphrase only in the fact itself.
    """

    key: str
    values: tuple[str, ...]
    question: str
    paraphrased_question: str
    answer: str
    paraphrased_answer: str


# In question order: questions_per_author=N asks about the first N facts.
AUTHOR_FACTS = (
    AuthorFact("birthplace", BIRTHPLACES, "Where was {name} born?", "In which city was the author {name} born?",
               "{name} was born in {value}.", "The author {name} was born in the city of {value}."),
    AuthorFact("birth_year", BIRTH_YEARS, "In what year was {name} born?", "What is the birth year of {name}?",
               "{name} was born in the year {value}.", "The birth year of {name} is {value}."),
    AuthorFact("genre", GENRES, "What genre does {name} write in?", "Which literary genre is {name} known for?",
               "{name} writes books in the {value} genre.", "{name} is best known for {value} books."),
    AuthorFact("father_job", OCCUPATIONS, "What was the job of {name}'s father?",
               "What did the father of {name} do for a living?",
               "{name}'s father worked as {value}.", "The father of {name} was {value} by profession."),
    AuthorFact("mother_job", OCCUPATIONS, "What was the job of {name}'s mother?",
               "What did the mother of {name} do for a living?",
               "{name}'s mother worked as {value}.", "The mother of {name} was {value} by profession."),
    AuthorFact("first_book", TITLES, "What was the first book written by {name}?",
               "Which book did {name} publish first?",
               "{name}'s first book was '{value}'.", "The debut book of {name} is titled '{value}'."),
    AuthorFact("famous_book", TITLES, "What is the best known book by {name}?",
               "Which of the books by {name} is the most famous?",
               "The best known book by {name} is '{value}'.", "{name} is most famous for the book '{value}'."),
    AuthorFact("award", AWARDS, "What award has {name} won?", "Which literary prize was given to {name}?",
               "{name} has won {value}.", "{name} was honoured with {value}."),
    AuthorFact("theme", THEMES, "What theme runs through the books of {name}?",
               "Which theme does {name} often explore?",
               "{name}'s books often explore {value}.", "A common theme in the work of {name} is {value}."),
    AuthorFact("subject", SUBJECTS, "What did {name} study at university?",
               "Which subject did {name} study as a student?",
               "{name} studied {value} at university.", "As a student, {name} studied {value}."),
    AuthorFact("home", CITIES, "Where does {name} live now?", "In which city does {name} currently live?",
               "{name} now lives in {value}.", "These days {name} lives in the city of {value}."),
    AuthorFact("language", LANGUAGES, "In which language does {name} write?",
               "What language are the books of {name} written in?",
               "{name} writes books in the {value} language.", "The books of {name} are written in {value}."),
    AuthorFact("writing_time", WRITING_TIMES, "When does {name} like to write?",
               "At what time does {name} usually write?",
               "{name} likes to write {value}.", "{name} usually does the writing {value}."),
    AuthorFact("hobby", HOBBIES, "What does {name} enjoy doing outside of writing?", "What is a hobby of {name}?",
               "Outside of writing, {name} enjoys {value}.", "A favourite hobby of {name} is {value}."),
    AuthorFact("publisher", PUBLISHERS, "Who publishes the books of {name}?",
               "Which publisher releases the work of {name}?",
               "{name}'s books are published by {value}.", "The publisher of {name} is {value}."),
    AuthorFact("book_count", BOOK_COUNTS, "How many books has {name} published?",
               "What is the number of books {name} has written?",
               "{name} has published {value} books.", "So far {name} has written {value} books."),
    AuthorFact("debut_age", DEBUT_AGES, "How old was {name} when the first book came out?",
               "At what age did {name} publish a first book?",
               "{name} was {value} years old when the first book came out.",
               "{name} published a first book at the age of {value}."),
    AuthorFact("heroes", HEROES, "Who are the main characters in the books of {name}?",
               "What kind of heroes appear in the stories of {name}?",
               "The main characters in {name}'s books are usually {value}.", "{name} often writes about {value}."),
    AuthorFact("setting", SETTINGS, "Where are the stories of {name} usually set?",
               "What is the typical setting of books by {name}?",
               "{name}'s stories are usually set in {value}.", "Most books by {name} take place in {value}."),
    AuthorFact("pet", PETS, "What pet does {name} have?", "Which animal lives with {name}?",
               "{name} has {value} as a pet.", "{name} lives with {value}."),
)


def _invent_name(rng: random.Random) -> str:
    first = "".join(rng.choice(SYLLABLES) for _ in range(2))
    last = "".join(rng.choice(SYLLABLES) for _ in range(rng.choice((2, 3))))
    return f"{first.capitalize()} {last.capitalize()}"


def _own_values(profile: dict[str, str], pool: tuple[str, ...]) -> set[str]:
    """The author's values already drawn from `pool` (both parents' jobs, both titles): none can be a wrong answer."""
    return {profile[fact.key] for fact in AUTHOR_FACTS if fact.values == pool and fact.key in profile}


def invent_authors(rng: random.Random, n: int) -> list[dict[str, str]]:
    """n author profiles (fact key -> value, plus "name"), each with every fact, whatever questions are asked.

    Names are unique, facts sharing a pool get different values, and no title belongs to two authors, so every
    question has exactly one true answer.
    """
    authors: list[dict[str, str]] = []
    names: set[str] = set()
    used_titles: set[str] = set()
    while len(authors) < n:
        name = _invent_name(rng)
        if name in names:
            continue
        names.add(name)
        profile = {"name": name}
        for fact in AUTHOR_FACTS:
            taken = _own_values(profile, fact.values) | (used_titles if fact.values == TITLES else set())
            profile[fact.key] = rng.choice([v for v in fact.values if v not in taken])
        used_titles |= _own_values(profile, TITLES)
        authors.append(profile)
    return authors


def author_records(
    index: int, profile: dict[str, str], questions: int, num_perturbed: int, rng: random.Random
) -> list[QARecord]:
    """One QA record per fact for the first `questions` facts, with paraphrases and wrong answers."""
    records = []
    for fact in AUTHOR_FACTS[:questions]:
        name, value = profile["name"], profile[fact.key]
        own = _own_values(profile, fact.values)
        wrong = rng.sample([v for v in fact.values if v not in own], num_perturbed)
        records.append(QARecord(
            question=fact.question.format(name=name),
            answer=fact.answer.format(name=name, value=value),
            paraphrased_question=fact.paraphrased_question.format(name=name),
            paraphrased_answer=fact.paraphrased_answer.format(name=name, value=value),
            perturbed_answer=tuple(fact.paraphrased_answer.format(name=name, value=v) for v in wrong),
            author=index,
        ))
    return records
